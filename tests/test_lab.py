"""The lab: every recipe, faithful and fixed, in one comparison report."""

from __future__ import annotations

import json
import re
import tempfile

import numpy as np
import pytest

import digitlab.lab as lab_module
from digitlab.cli import main
from digitlab.lab import RECIPES


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    temporary = tmp_path_factory.mktemp("tmp")  # the lab's scratch folders go here
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(temporary))
        assert main(["lab", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {(row["recipe"], row["variant"], row["title"]): row for row in summary["rows"]}
    return out, summary, rows, temporary


def _row(rows, recipe, variant, title_start=""):
    found = [row for (r, v, t), row in rows.items() if r == recipe and v == variant
             and t.startswith(title_start)]
    assert len(found) == 1, (recipe, variant, title_start)
    return found[0]


def test_every_recipe_has_a_faithful_and_a_fixed_row(lab) -> None:
    out, summary, rows, _ = lab
    assert summary["recipes"] == list(RECIPES)
    for recipe in RECIPES:
        variants = {v for (r, v, _t) in rows if r == recipe}
        assert variants == {"faithful", "fixed"}, recipe
    for row in summary["rows"]:
        for key in ("data", "model", "test_accuracy", "majority_baseline", "seconds"):
            assert key in row
        low, high = row["test_accuracy_ci"]  # the 95% Wilson interval beside each accuracy
        assert low <= row["test_accuracy"] <= high
    page = (out / "report.html").read_text(encoding="utf-8")
    for recipe in RECIPES:
        assert f"id='{recipe}'" in page
    assert page.count("data:image/png;base64,") >= 10
    assert "95% interval" in page
    assert re.search(r"squared_cost_first_1000: \d\.\d{1,3}[,;)<]", page)  # costs rounded:
    assert not re.search(r": \d+\.\d{5,}", page)  # 0.908, never 0.9080430403514952


def test_two_detector_shows_how_far_91_percent_was_from_useful(lab) -> None:
    out, _, rows, temporary = lab
    guess = _row(rows, "two-detector", "faithful")
    assert 0.88 <= guess["test_accuracy"] <= 0.93
    assert guess["majority_baseline"] == pytest.approx(0.9)
    assert guess["balanced_accuracy"] < 0.75  # barely better than "never a 2"
    assert len(guess["most_positive_pixel"]) == 2
    logistic = _row(rows, "two-detector", "fixed")
    assert logistic["test_accuracy"] > 0.96
    assert logistic["balanced_accuracy"] > 0.88
    assert (out / "two-detector" / "figures" / "faithful-arrows.png").is_file()
    # ran on a PNG tree, written to a temporary folder and removed: no 21 MB left behind
    assert guess["data"].startswith("MNIST sample as a PNG tree")
    assert guess["reproduces"] == "reproduces: seed 2024's weights, pixels (20, 22) and (7, 18)"
    assert list(temporary.iterdir()) == []
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 5_000_000


def test_digits_mlp_replays_the_classic_numbers(lab) -> None:
    out, _, rows, _ = lab
    random = _row(rows, "digits-mlp", "faithful", "Random classifier")
    assert random["test_accuracy"] < 0.2
    assert random["reproduces"].startswith("not reproducible")
    # the exercise: templates averaged over images[1000:], tested on the first 1,000
    template = _row(rows, "digits-mlp", "faithful", "Template")
    assert round(template["test_accuracy"], 3) == 0.853
    assert template["reproduces"] == "reproduces: 0.853 exactly"
    # the exercise's cost of its random 64-16-10 net on the first 1,000 images
    untrained = _row(rows, "digits-mlp", "faithful", "Random-weight")
    assert untrained["test_accuracy"] < 0.2
    assert round(untrained["squared_cost_first_1000"], 2) == 8.99
    assert "random draw" in untrained["reproduces"]
    plugged = _row(rows, "digits-mlp", "faithful", "MLPClassifier")
    assert plugged["test_accuracy"] == plugged["sklearn_test_accuracy"] == 0.962
    assert plugged["reproduces"] == "reproduces: 0.962 exactly"
    assert plugged["squared_cost_first_1000"] < untrained["squared_cost_first_1000"]
    tuned = _row(rows, "digits-mlp", "fixed")
    assert tuned["test_accuracy"] >= plugged["test_accuracy"]
    for name in ("templates", "values", "predictions"):
        assert (out / "digits-mlp" / "figures" / f"faithful-{name}.png").is_file()


def test_digit_with_values_writes_the_exercises_raw_counts() -> None:
    """The value overlay of an 8x8 digit shows 0..16 as the exercise prints it, not 0..255."""
    from digitlab import plots
    from digitlab.data.sources import digits_raw_values, load

    raw = digits_raw_values(load("digits").train_images[:1])[0]
    figure = plots.digit_with_values(raw, vmax=16)
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert texts == {str(v) for v in np.unique(raw) if v}
    assert max(int(t) for t in texts) <= 16
    assert figure.axes[0].images[0].get_clim() == (0, 16)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_fixed_variant_is_at_least_as_good_as_its_faithful_one(lab, recipe) -> None:
    """On the larger split where the lab has one (every held-out digit, or cross-validation
    over every image), else on the test split; never worse than the best faithful row."""
    _, _, rows, _ = lab
    faithful = [row for (r, v, _t), row in rows.items() if r == recipe and v == "faithful"]
    fixed = _row(rows, recipe, "fixed")
    key = "larger_split_accuracy" if "larger_split_accuracy" in fixed else "test_accuracy"
    best = max((row for row in faithful if key in row), key=lambda row: row[key])
    assert fixed[key] >= best[key], (recipe, key)
    if key == "larger_split_accuracy":
        assert best["larger_split"] == fixed["larger_split"]
        low, high = fixed["larger_split_ci"]
        assert low <= fixed[key] <= high
    assert fixed["reproduces"].startswith("not the exercise")
    for row in faithful:
        assert row["reproduces"].startswith(("reproduces", "not reproducible", "cost"))


def test_softmax_zero_vs_one_and_relu_net(lab) -> None:
    _, _, rows, _ = lab
    assert _row(rows, "softmax", "fixed")["test_accuracy"] > 0.89
    ranking = _row(rows, "softmax", "fixed")["mistaken_for_5"]
    assert ranking[0]["label"] == 5
    assert ranking[0]["percent"] > 80
    assert len(ranking) == 4
    zero_one = _row(rows, "zero-vs-one", "faithful")
    assert zero_one["n_parameters"] == 10431
    assert zero_one["test_accuracy"] > 0.97
    assert _row(rows, "zero-vs-one", "fixed")["test_accuracy"] > 0.97
    assert _row(rows, "zero-vs-one", "fixed")["larger_split_accuracy"] > 0.99  # of 1,000 images
    assert _row(rows, "relu-net", "faithful")["test_accuracy"] < 0.3  # lr 50 with N(0,1) fails
    assert _row(rows, "relu-net", "fixed")["test_accuracy"] > 0.92


def test_lab_table_is_not_folded_when_stdout_is_not_a_terminal(sample, monkeypatch, tmp_path,
                                                                capsys) -> None:
    """A pipe or a notebook's `!digitlab lab` gets whole table rows, not 80-column fragments."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(lab_module, "load_mnist_sample", lambda: sample.take("train", 0, 300))
    assert main(["lab", "softmax", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("│ softmax")]
    assert len(rows) == 2  # one line per variant: nothing folded onto a second line
    assert all("not reproducible" in r or "not the exercise" in r for r in rows)
    assert not any(line.startswith("│  ") for line in table.splitlines())


def test_unknown_recipe_is_one_line_exit_2(tmp_path, capsys) -> None:
    assert main(["lab", "no-such-recipe", "--out", str(tmp_path)]) == 2
    assert "unknown recipe 'no-such-recipe'" in capsys.readouterr().err


def test_an_interrupted_lab_leaves_its_folder_as_it_was(tmp_path, monkeypatch) -> None:
    import dataclasses

    from digitlab.lab import run_lab

    out = tmp_path / "lab"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    ran = []

    def interrupted(folder, _report):
        ran.append(folder)
        (folder / "half.png").write_bytes(b"half a figure")
        raise KeyboardInterrupt

    monkeypatch.setitem(RECIPES, "softmax", dataclasses.replace(RECIPES["softmax"], run=interrupted))
    with pytest.raises(KeyboardInterrupt):
        run_lab(["softmax"], out)
    assert ran  # the recipe ran, and wrote, before it stopped
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------- the test split, shown only


MEASURE = lab_module._measure  # the lab's own, however often a test patches it


def _lab_states(recipe, monkeypatch, data, out):
    """Run ``recipe`` on ``data`` (as the MNIST sample); each variant's fitted weights and rows."""
    states = {}

    def recording(recipe_name, variant, title, *args, **kwargs):
        result = MEASURE(recipe_name, variant, title, *args, **kwargs)
        states[(variant, title)] = args[2].state_dict()  # (data_text, model_text, model, ...)
        return result

    monkeypatch.setattr(lab_module, "load_mnist_sample", lambda: data)
    monkeypatch.setattr(lab_module, "_measure", recording)
    rows = RECIPES[recipe].run(out, lambda _text: None)
    return states, rows


def _twins(sample):
    """A small sample, and the same with its test labels shuffled and test images reversed."""
    small = sample.take("train", 0, 500).take("test", 0, 200)
    shuffled = small.replace(test_labels=np.random.default_rng(0).permutation(small.test_labels),
                             test_images=small.test_images[::-1].copy())
    return small, shuffled


@pytest.mark.parametrize("recipe", ["softmax", "zero-vs-one", "relu-net"])
def test_recipes_showing_test_curves_choose_nothing_on_them(recipe, sample, monkeypatch,
                                                             tmp_path) -> None:
    """The recipes pass the test split to fit for their learning curves (labelled as shown
    only): other test labels must give the very same weights."""
    small, shuffled = _twins(sample)
    real, real_rows = _lab_states(recipe, monkeypatch, small, tmp_path)
    other, other_rows = _lab_states(recipe, monkeypatch, shuffled, tmp_path)
    assert real.keys() == other.keys()
    assert len(real) == 2
    for key in real:
        for name in real[key]:
            np.testing.assert_array_equal(real[key][name], other[key][name], err_msg=f"{key} {name}")
    # the shuffled test split did reach the recipe: its test figures moved
    assert [r.test_accuracy for r in real_rows] != [r.test_accuracy for r in other_rows]


def test_the_lab_check_can_fail(sample, monkeypatch, tmp_path) -> None:
    """A recipe whose softmax stopped early on the test split it is given would be caught."""
    import functools

    steered = functools.partial(lab_module.Softmax, early_stopping=True, n_iter_no_change=1, tol=0.0)
    monkeypatch.setattr(lab_module, "Softmax", steered)
    small, shuffled = _twins(sample)
    real, _ = _lab_states("softmax", monkeypatch, small, tmp_path)
    other, _ = _lab_states("softmax", monkeypatch, shuffled, tmp_path)
    assert any(not np.array_equal(real[key][name], other[key][name])
               for key in real for name in real[key])


def test_training_log_lines_show_three_significant_figures() -> None:
    """Progress lines in a log read "loss 0.908", never "loss 0.9080" or 16 digits."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from digitlab.cli import _TrainingDisplay

    stream = io.StringIO()
    display = _TrainingDisplay(Console(file=stream, width=200), enabled=True, verbose=False)
    display.report(SimpleNamespace(stage="epoch", step=3, total=10,
                                   logs={"loss": 0.9080430403514952, "val_accuracy": 0.98765}))
    assert stream.getvalue().strip() == "epoch 3/10  loss 0.908  val_accuracy 0.988"


def test_lab_over_seeds_shows_mean_and_spread(sample, monkeypatch, tmp_path, capsys) -> None:
    from digitlab.lab import run_lab

    # in-process (--workers 1), so the smaller sample reaches the recipe
    monkeypatch.setattr(lab_module, "load_mnist_sample", lambda: sample.take("train", 0, 300))
    out = tmp_path / "seeds"
    assert main(["lab", "softmax", "--seeds", "0,1,2", "--workers", "1", "--out", str(out)]) == 0
    assert "±" in capsys.readouterr().out
    summary = json.loads((out / "seeds.json").read_text())
    faithful = summary["rows"][0]
    assert (faithful["recipe"], faithful["variant"]) == ("softmax", "faithful")
    by_seed = faithful["test_accuracy"]["by_seed"]
    assert set(by_seed) == {"0", "1", "2"}
    assert len(set(by_seed.values())) > 1  # the seed reaches the model: Adam(0.1) lands elsewhere
    assert faithful["test_accuracy"]["std"] > 0
    assert (out / "seed-1" / "report.html").is_file()
    # the exercise's own seed for this recipe is 0: the plain lab's figure is seed 0's
    plain = run_lab(["softmax"], tmp_path / "plain")
    assert plain[0].test_accuracy == by_seed["0"]
