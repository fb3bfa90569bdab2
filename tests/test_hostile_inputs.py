"""Issue 12: hostile files of every format digitlab reads, and hostile output places.

Each case (built in ``hostile.py``) runs ``python -m digitlab.cli ...`` in a
subprocess under a 1 GiB address-space limit and must answer with exit code
2 and one ``digitlab: error:`` line naming the file (data warnings, one line
each, may come first), print no traceback and nothing on stdout, and leave
the case's folder exactly as it was. ``python tests/hostile.py`` runs the
same cases and prints a table.

The controls show the other side: the unbroken material of every case
family passes under the same limits, so a failing case fails because of
what was broken, not because of the limits or the fixture.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

import hostile


@pytest.mark.parametrize("name", hostile.case_names())
def test_hostile_input_gets_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    outcome = hostile.run_case(hostile.get_case(name), tmp_path)
    if outcome.status == "skip":
        pytest.skip(outcome.reason)
    assert outcome.status == "pass", outcome.explain()


def test_there_are_a_few_hundred_cases_covering_every_format() -> None:
    names = hostile.case_names()
    assert len(names) == len(set(names)) >= 300
    for family in ("idx-", "npz-", "csv-", "mat-", "tree-", "predict-", "model-predict-",
                   "model-evaluate-", "model-inspect-", "model-serve-", "out-train-",
                   "out-inspect-", "out-convert-"):
        assert sum(name.startswith(family) for name in names) >= 3, family


@pytest.mark.parametrize("name", hostile.control_names())
def test_unbroken_material_passes_under_the_same_limits(name: str, tmp_path: Path) -> None:
    case_dir, home = tmp_path / "case", tmp_path / "home"
    case_dir.mkdir()
    home.mkdir()
    setup = hostile.get_control(name)(case_dir)
    result = subprocess.run(hostile.command(setup.argv), capture_output=True, text=True,
                            env=hostile.child_env(home), cwd=case_dir, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not [line for line in result.stderr.splitlines()
                if not line.startswith(("digitlab: warning:", "note:"))], result.stderr


GOOD: dict[str, Any] = {"returncode": 2, "stdout": "", "needles": ("bad-q.png",), "changes": [],
                        "workdir": "/tmp/w"}
LINE = "digitlab: error: /tmp/w/case/tree/train/3/bad-q.png: truncated PNG\n"


def test_the_checker_accepts_one_error_line_after_warning_lines() -> None:
    assert hostile.check_result(stderr=LINE, **GOOD) == []
    warned = "digitlab: warning: /tmp/w/case/tree: skipped 2 file(s)\n" + LINE
    assert hostile.check_result(stderr=warned, **GOOD) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"stderr": "Traceback (most recent call last):\n  ...\nMemoryError\n", "returncode": 1},
     "MemoryError"),
    ({"stderr": "Traceback (most recent call last):\nValueError: x\n" + LINE}, "traceback"),
    ({"returncode": 1}, "exit code 1"),
    ({"returncode": -9}, "killed by signal 9"),
    ({"returncode": 0, "stderr": ""}, "no 'digitlab: error:' line"),
    ({"stdout": "a table\n"}, "printed on stdout"),
    ({"stderr": LINE + LINE}, "expected one error line"),
    ({"stderr": "digitlab: error: /tmp/w/case/tree/train/3/bad\nq.png: bad\n"}, "2 lines"),
    ({"stderr": LINE + "  more detail\n"}, "expected one error line"),
    ({"stderr": "usage: digitlab ...\n" + LINE}, "expected one error line"),
    ({"stderr": "digitlab: error: \n"}, "empty error message"),
    ({"stderr": "digitlab: error: /tmp/w/case/\x1b[31mbad-q.png: bad\n"}, "control character"),
    ({"stderr": "digitlab: error: /tmp/w/case/tree: holds no images\n"}, "does not name"),
    ({"stderr": "digitlab: error: /tmp/w/case/bad-q.png: corrupt ()\n"}, "hides an out-of-memory"),
    ({"stderr": "digitlab: error: /tmp/w/case/bad-q.png: unreadable (Unable to allocate 1.49 "
                "GiB for an array)\n"}, "hides an out-of-memory"),
    ({"needles": ("w",)}, "does not name"),  # only in the temporary folder's path
    ({"changes": ["+'out/model.safetensors'"]}, "left changes behind"),
])
def test_the_checker_catches_each_kind_of_failure(change: dict[str, object], expected: str) -> None:
    answer: dict[str, Any] = {**GOOD, "stderr": LINE, **change}
    problems = hostile.check_result(**answer)
    assert any(expected in problem for problem in problems), problems


def test_snapshot_sees_added_removed_and_changed_entries(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("a")
    (tmp_path / "gone.txt").write_text("b")
    before = hostile.snapshot(tmp_path)
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "keep.txt").write_text("changed")
    (tmp_path / "out").mkdir()
    changes = hostile.snapshot_changes(before, hostile.snapshot(tmp_path))
    assert sorted(changes) == ["+'out'", "-'gone.txt'", "~'keep.txt'"]


def test_bombs_expand_to_what_they_claim() -> None:
    # The streams are built from one repeated compressed block; check the trick on 3 MiB.
    size = 3 * (1 << 20) + 5
    assert gzip.decompress(hostile.gzip_bomb(b"head", size, b"tail")) == (
        b"head" + bytes(size) + b"tail")
    assert zlib.decompress(hostile.zlib_bomb(b"head", size)) == b"head" + bytes(size)
    # The real ones stay small on disk and declare more than the address-space limit.
    bomb = hostile.gzip_bomb(b"", hostile.BOMB_BYTES)
    assert len(bomb) < 2_000_000
    assert struct.unpack("<I", bomb[-4:])[0] == hostile.BOMB_BYTES > 1.5e9 > hostile.ADDRESS_SPACE
    member = hostile.zip_bomb_member("x.npy", b"", hostile.BOMB_BYTES)
    assert member.size == hostile.BOMB_BYTES
    assert len(member.data) < 2_000_000
    png = hostile.constant_png(9400, 8, 6)
    assert len(png) < 1_000_000
    assert struct.unpack(">II", png[16:24]) == (9400, 9400)


def test_cases_are_deterministic(tmp_path: Path) -> None:
    names = ["npz-random-bytes", "csv-text-cell", "tree-png-cut-idat-mid", "mat-y-nan"]
    for name in names:
        first, second = tmp_path / name / "1", tmp_path / name / "2"
        first.mkdir(parents=True)
        second.mkdir(parents=True)
        hostile.get_case(name).build(first)
        hostile.get_case(name).build(second)
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files
        for rel in files:
            assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_pickle_trap_would_be_seen(tmp_path: Path) -> None:
    # The pickled-object cases rely on this: unpickling a Trap creates the marker folder.
    import pickle

    marker = tmp_path / "UNPICKLED"
    before = hostile.snapshot(tmp_path)
    pickle.loads(pickle.dumps(hostile.Trap(str(marker))))  # our own harmless test object
    assert marker.is_dir()
    assert hostile.snapshot_changes(before, hostile.snapshot(tmp_path)) == ["+'UNPICKLED'"]
