"""Every notebook in notebooks/ runs top to bottom in a real kernel, and is stored stripped.

Each notebook asserts its exercise's figures in its own cells, so a changed figure fails
here as a cell error. The kernel is this Python (``sys.executable``, through a kernelspec
written to a temporary JUPYTER_PATH: no global Jupyter set-up is needed, and a user's own
"python3" kernel, perhaps of another environment, is never picked up). Each notebook runs
in a temporary working folder, so what it writes never lands in the repository.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "digitlab-tests"
# A guard against a hung kernel, far above any cell's run time (the slowest, the CNN's
# training, takes seconds); not a speed test.
CELL_TIMEOUT = 600


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec named KERNEL running ipykernel in this very Python."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "digitlab tests", "language": "python",
    }), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The kernel's IPython profile and history go to the temporary folder too.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return KERNEL


def run_notebook(notebook: nbformat.NotebookNode, folder: Path, kernel: str) -> nbformat.NotebookNode:
    """Execute every cell in order with ``folder`` as the working folder; raises
    CellExecutionError on the first cell that fails."""
    client = NotebookClient(notebook, kernel_name=kernel, timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(folder)}})
    return client.execute()


def warnings_printed(notebook: nbformat.NotebookNode) -> list[str]:
    """What the cells wrote to stderr (warnings, as pytest's warnings-as-errors would catch)."""
    return [output["text"] for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", [])
            if output.get("output_type") == "stream" and output.get("name") == "stderr"]


def test_there_are_notebooks() -> None:
    # One per classic exercise, and the best reader on a laptop.
    assert [path.name for path in NOTEBOOKS] == [
        "01-is-it-a-2.ipynb", "02-digits-random-to-mlp.ipynb",
        "03-softmax-grids-and-mistakes.ipynb", "04-zero-vs-one-20x20.ipynb",
        "05-relu-net-learning-rates.ipynb", "06-best-reader-on-a-laptop.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, kernel: str, tmp_path: Path) -> None:
    if "CNN(" in path.read_text(encoding="utf-8") and not os.environ.get("CI"):
        pytest.importorskip("torch")  # the torch extra
    notebook = nbformat.read(path, as_version=4)
    folder = tmp_path / "work"
    folder.mkdir()
    before = sorted(p.name for p in path.parent.iterdir())
    done = run_notebook(notebook, folder, kernel)
    assert warnings_printed(done) == []
    # it showed its figures inline, as PNGs
    shown = [output for cell in done.cells if cell.cell_type == "code"
             for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(shown) >= 2
    assert sorted(p.name for p in path.parent.iterdir()) == before  # wrote nothing beside itself


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_stored_stripped_and_checks_its_figures(path: Path) -> None:
    """No outputs or execution counts in the repository: diffs show only what changed in
    the code and text (`jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`)."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.get("outputs") == [], f"{path.name}: outputs stored; clear them"
        assert cell.get("execution_count") is None, f"{path.name}: execution counts stored"
    assert any("assert " in cell.source for cell in code), f"{path.name} asserts no figure"
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


def test_a_failing_cell_fails_the_run(kernel: str, tmp_path: Path) -> None:
    """The runner is honest: a wrong figure (a failing assert) is an error, and the cells
    run in the temporary folder."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("from pathlib import Path\nPath('made-here.txt').write_text('x')"),
        nbformat.v4.new_code_cell("assert 0.907 == 0.9, 'accuracy changed'"),
    ]
    with pytest.raises(CellExecutionError, match="accuracy changed"):
        run_notebook(notebook, tmp_path, kernel)
    assert (tmp_path / "made-here.txt").is_file()
