"""The README opens with exactly two set-up commands, and CI runs the second."""

from __future__ import annotations

from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    module = load_script("scripts/readme_commands.py")
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


LOCK = ROOT / "requirements" / "test.lock"


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"{LOCK.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_readme_test_command_installs_from_the_lock() -> None:
    tests = _commands()[1]
    assert "-c requirements/test.lock" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "lock=requirements/test.lock" in ci  # --latest knows what to leave out


def test_lock_pins_every_requirement_within_its_range() -> None:
    """Every requirement of the package and of the extras the test set-up installs is
    pinned, to a version the package's own range admits (the ranges stay ranges)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the lock
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["test"], *extras["torch"], *extras["web"]]
    pins = _pins()
    for text in wanted:
        requirement = Requirement(text)
        assert any(op in str(requirement.specifier) for op in (">", "<", "~")) or \
            not requirement.specifier, f"{text}: keep the package's requirement a range"
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK.name} pins {requirement.name}=={pins[name]}, outside {requirement.specifier}"
