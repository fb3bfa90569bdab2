"""Figures as recipes, drawn by a process started before the run needs it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from digitlab import drawing, plots
from digitlab.drawing import Recipe, start_drawer
from digitlab.inspection import Figures, inspect_model
from digitlab.models import Template
from digitlab.report import draw_figures

needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not sys.platform.startswith("linux"),
                                reason="the drawing process is forked (Linux)")


@pytest.fixture
def forkable(monkeypatch):
    """As on a 2-core Linux machine with no other Python thread running."""
    import threading

    from digitlab import engines

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(engines, "usable_cores", lambda: 2)


@pytest.fixture(scope="module")
def recipes(sample) -> list[Recipe]:
    images, labels = sample.test_images[:12], sample.test_labels[:12]
    return [
        Recipe("digit_grid", (images, [str(v) for v in labels]),
               {"mistakes": labels % 3 == 0, "suptitle": "digits"}),
        Recipe("confusion_figure", (np.arange(9).reshape(3, 3), ["0", "1", "2"])),
        Recipe("digit_with_values", (images[0],), {"title": "one"}),
    ]


def test_a_recipe_builds_the_figure_its_function_draws(recipes, sample) -> None:
    figure = recipes[0]()
    assert isinstance(figure, Figure)
    images, labels = sample.test_images[:12], sample.test_labels[:12]
    direct = plots.digit_grid(images, [str(v) for v in labels], mistakes=labels % 3 == 0,
                              suptitle="digits")
    assert plots.png_bytes(figure) == plots.png_bytes(direct)
    assert pickle.loads(pickle.dumps(recipes[0])).function == "digit_grid"


@needs_fork
def test_the_drawer_draws_the_bytes_this_process_draws(recipes, forkable) -> None:
    with start_drawer() as drawer:
        assert drawer is not None
        drawn = drawer.draw(recipes)
    assert drawn == [plots.png_bytes(recipe()) for recipe in recipes]
    with pytest.raises(ChildProcessError):  # reaped
        os.waitpid(drawer.pid, 0)
    assert drawer.draw(recipes) is None  # once only: the process has gone


@needs_fork
def test_recipes_submitted_early_are_collected_later(recipes, forkable) -> None:
    expected = [plots.png_bytes(recipe()) for recipe in recipes]
    with start_drawer() as drawer:
        drawer.submit(recipes)
        drawer.submit(recipes[:1])  # sent already: not drawn twice
        drawn = drawer.draw(recipes)
    assert drawn == expected
    with start_drawer() as drawer:  # in batches, the first in the background, in another order
        drawer.submit(recipes[2:], background=True)
        drawer.submit(recipes[:1])
        drawn = drawer.draw(recipes)
    assert drawn == expected
    with start_drawer() as drawer:
        drawer.submit(recipes[:1])
        assert drawer.draw(recipes[1:]) is None  # drew another: the caller draws them itself


@needs_fork
def test_a_drawer_whose_run_failed_is_stopped_not_waited_for(forkable, monkeypatch) -> None:
    import signal

    sent = []
    real_kill = os.kill
    monkeypatch.setattr(os, "kill", lambda pid, sig: (sent.append((pid, sig)), real_kill(pid, sig)))
    slow = [Recipe("digit_with_values", (np.full((28, 28), 200 + i, np.uint8),)) for i in range(20)]
    with start_drawer() as drawer:
        drawer.submit(slow, background=True)  # the run then fails: draw() is never called
    assert sent == [(drawer.pid, signal.SIGTERM)]
    with pytest.raises(ChildProcessError):  # and reaped
        os.waitpid(drawer.pid, 0)
    sent.clear()
    with start_drawer() as drawer:
        assert drawer.draw(slow[:2]) is not None
    assert sent == []  # asked for its drawings: it finished them and left by itself


@needs_fork
def test_a_drawer_that_died_leaves_the_drawing_to_this_process(recipes, forkable) -> None:
    import signal

    entries = [(f"f{i}", "caption", recipe) for i, recipe in enumerate(recipes)]
    with start_drawer() as drawer:
        assert drawer is not None
        os.kill(drawer.pid, signal.SIGKILL)
        os.waitpid(drawer.pid, 0)
        assert drawer.draw(recipes) is None
    with start_drawer() as drawer:
        os.kill(drawer.pid, signal.SIGKILL)
        pngs = draw_figures(Figures(entries), drawer)
    assert list(pngs) == ["f0", "f1", "f2"]
    assert list(pngs.values()) == [plots.png_bytes(recipe()) for recipe in recipes]


@needs_fork
def test_an_unused_drawer_is_stopped_and_reaped(forkable) -> None:
    with start_drawer() as drawer:
        assert drawer is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(drawer.pid, 0)


def test_no_drawer_when_disabled_or_forking_is_unsafe(monkeypatch) -> None:
    import threading

    with start_drawer(enabled=False) as drawer:
        assert drawer is None
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # a forked child could deadlock
    assert not drawing.can_fork()
    with start_drawer() as drawer:
        assert drawer is None


def test_figures_are_recipes_until_asked_for(sample) -> None:
    data = sample.take("train", 0, 300).take("test", 0, 100)
    model = Template().fit(data.features("train"), data.train_labels)
    inspection = inspect_model(model, data, splits=("test",))
    assert all(isinstance(figure, Recipe) for _, _, figure in inspection.figures.entries)
    pickle.dumps(inspection.figures.entries)  # each can go to a drawing process
    built = inspection.figures.items
    assert all(isinstance(figure, Figure) for _, _, figure in built)
    assert [f for _, _, f in inspection.figures.items] == [f for _, _, f in built]  # built once
    assert inspection.figures.names() == [name for name, _, _ in built]


@needs_fork
def test_the_train_command_draws_without_importing_matplotlib(tmp_path) -> None:
    """The command's own process never imports matplotlib when a drawing process draws,
    and its run folder holds the figures and report a run drawing them itself writes."""
    from digitlab.engines import usable_cores
    from digitlab.run import RunConfig, train

    if usable_cores() < 2:
        pytest.skip("no drawing process on one core")
    code = ("from digitlab.cli import main\n"
            f"assert main(['train', '--model', 'majority', '--quiet', '--out', {str(tmp_path / 'cli')!r}]) == 0\n"
            "import sys; print(' '.join(sys.modules))")
    modules = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split())
    assert "matplotlib" not in modules
    assert "torch" not in modules
    train(RunConfig(model="majority"), tmp_path / "here")
    figures = sorted(p.name for p in (tmp_path / "here" / "figures").iterdir())
    assert figures == sorted(p.name for p in (tmp_path / "cli" / "figures").iterdir())
    assert len(figures) >= 5
    for name in figures:
        assert (tmp_path / "cli" / "figures" / name).read_bytes() == \
            (tmp_path / "here" / "figures" / name).read_bytes(), name
    assert (tmp_path / "cli" / "report.html").read_bytes() == (tmp_path / "here" / "report.html").read_bytes()
