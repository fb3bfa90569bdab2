"""MkDocs hooks: pages that show a file of the repository (README.md), and the notebooks.

Each page of ``SHOWN`` holds only a line saying which file it shows; this hook puts the
file's text in its place, so the docs never drift from it. Links in that text are
relative to the file's folder: a link to another shown file goes to its page, any other
to the source repository (``repo_url``). The strict build still checks every anchor.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

# docs page -> the repository file it shows
SHOWN = {
    "readme.md": "README.md",
    "mnist-sample.md": "src/digitlab/data/mnist_sample.md",
}
PAGE_OF = {source: page for page, source in SHOWN.items()}

LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    source = SHOWN.get(page.file.src_uri)
    if source is None:
        return markdown
    root = Path(config["config_file_path"]).parent
    text = (root / source).read_text(encoding="utf-8")

    def relink(match: re.Match[str]) -> str:
        path = posixpath.normpath(posixpath.join(posixpath.dirname(source), match.group(1)))
        anchor = match.group(2) or ""
        if path in PAGE_OF:
            return f"]({PAGE_OF[path]}{anchor})"
        return f"]({config['repo_url'].rstrip('/')}/blob/main/{path}{anchor})"

    return LINK.sub(relink, text)


# ---------------------------------------------------------------- the notebooks as tutorials
# The notebooks live in notebooks/ at the repository root, outside docs/. Each one found
# is added as the page notebooks/NAME.ipynb (mkdocs-jupyter renders it, not executed)
# and listed under "Tutorials" in the nav, so a new notebook needs no change here.
# The pages are files of the repository root, not generated ones: mkdocs-jupyter's
# wrapper loses a generated file's source path.

TUTORIALS = "Tutorials"


def notebooks(config: Any) -> list[Path]:
    root = Path(config["config_file_path"]).parent
    return sorted((root / "notebooks").glob("*.ipynb"))


def on_config(config: Any) -> Any:
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and TUTORIALS in entry:
            listed = entry[TUTORIALS]
            listed.extend(f"notebooks/{path.name}" for path in notebooks(config)
                          if f"notebooks/{path.name}" not in listed)
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which picks the notebooks up
def on_files(files: Any, config: Any) -> Any:
    for path in notebooks(config):
        files.append(File(f"notebooks/{path.name}", str(path.parent.parent), config["site_dir"],
                          config["use_directory_urls"]))
    return files
