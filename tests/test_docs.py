"""The documentation builds offline and strictly, and the API reference has its pages.

``mkdocs build --strict`` fails on any warning: a docstring griffe cannot read (a
parameter documented that the signature lacks, a malformed numpy section), a page
missing from the nav, a broken link or anchor.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def page_markup(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text(encoding="utf-8")


def page_text(site: Path, page: str) -> str:
    """The visible text of a built page, tags dropped, whitespace collapsed."""
    return page_text_of(page_markup(site, page))


def page_text_of(markup: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup))).strip()


def anchors(site: Path, page: str) -> set[str]:
    """The ids of a page: mkdocstrings gives each documented object its full name."""
    return set(re.findall(r'id="([^"]+)"', page_markup(site, page)))


def build(root: Path, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=root, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build(ROOT, out)
    return out


def test_every_reference_page_is_built(site: Path) -> None:
    pages = ["digitlab", "models", "data", "run", "metrics", "analysis", "plots", "inspection",
             "io", "reader", "bundled", "predict", "calibration", "export"]
    for page in pages:
        assert (site / "reference" / page / "index.html").is_file(), page
    for page in ["", "readme", "tutorials", "design-notes"]:
        assert (site / page / "index.html").is_file(), page


def test_models_page_lists_each_model_and_its_settings(site: Path) -> None:
    ids = anchors(site, "reference/models")
    for name in ["Majority", "RandomScores", "Template", "GuessAndCheck", "Perceptron",
                 "Softmax", "MLP", "cnn.CNN", "base.DigitClassifier"]:
        assert f"digitlab.models.{name}" in ids, name
    # the Softmax section documents its settings from the numpy Parameters section
    markup = page_markup(site, "reference/models")
    start = markup.index('id="digitlab.models.Softmax"')
    softmax = page_text_of(markup[start:markup.index('id="digitlab.models.MLP"')])
    assert "lr float Learning rate" in softmax
    assert "random_state int, numpy Generator or None Seeds" in softmax


def test_data_and_top_level_pages_document_load(site: Path) -> None:
    data = anchors(site, "reference/data")
    assert {"digitlab.data.sources.load", "digitlab.data.dataset.Dataset.features"} <= data
    top = anchors(site, "reference/digitlab")
    for name in ["digitlab.load", "digitlab.load_model", "digitlab.Reader", "digitlab.DataError"]:
        assert name in top, name


def test_readme_page_shows_the_readme(site: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = [line[3:] for line in readme.splitlines() if line.startswith("## ")]
    shown = page_text(site, "readme")
    for heading in headings:
        assert page_text_of(heading).replace("`", "") in shown, heading


def test_notebooks_become_tutorial_pages(tmp_path: Path) -> None:
    """A notebook dropped into notebooks/ is a page under Tutorials, shown, not run."""
    import nbformat  # mkdocs-jupyter's own dependency
    root = tmp_path / "repo"
    root.mkdir()
    (root / "mkdocs.yml").write_bytes((ROOT / "mkdocs.yml").read_bytes())
    for name in ["docs", "scripts", "src", "README.md"]:
        (root / name).symlink_to(ROOT / name)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Average images\n\nThe template exercise."),
        # running this cell would fail the build: the docs show notebooks as saved
        nbformat.v4.new_code_cell("raise SystemExit('executed')"),
    ]
    (root / "notebooks").mkdir()
    nbformat.write(notebook, root / "notebooks" / "01-templates.ipynb")
    out = tmp_path / "site"
    build(root, out)
    assert "The template exercise." in page_text(out, "notebooks/01-templates")
    home = page_markup(out, "")
    assert 'href="notebooks/01-templates/"' in home  # listed in the nav
    assert not (root / ".cache").exists()


def test_every_notebook_is_a_tutorial_page(site: Path) -> None:
    """The real notebooks of notebooks/ build (strictly) into pages showing their text."""
    import nbformat
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
        assert first.startswith("# "), path.name
        assert page_text_of(first[2:]) in page_text(site, f"notebooks/{path.stem}"), path.name
