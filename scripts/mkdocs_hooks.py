"""MkDocs hook: pages that show a file of the repository, such as README.md.

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
