"""Print one of the two set-up commands the README opens with.

    python scripts/readme_commands.py main   # install and run the main job
    python scripts/readme_commands.py test   # install and run the tests

CI runs the README's own test command through this script, so the README
and CI cannot drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> list[str]:
    """The lines of the README's first fenced code block."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return [line for line in lines[start + 1 : end] if line.strip()]


def main() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    which = sys.argv[1] if len(sys.argv) > 1 else "test"
    print(commands[{"main": 0, "test": 1}[which]])


if __name__ == "__main__":
    main()
