"""The README opens with exactly two set-up commands, and CI runs the second."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_readme_opens_with_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.index("```")
    assert text[:first_block].strip() == "# digitlab"  # nothing before the two commands
    commands = _commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.startswith("pip install")
    assert "digitlab lab" in main_job  # the main job: every recipe on the bundled data
    assert tests.startswith("pip install")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "readme_commands.py test" in ci
