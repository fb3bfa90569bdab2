"""Atomic writes: nothing half-written, OS errors as one OutputError naming the destination,
files as readable as the umask says, and output problems found before any work."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from digitlab import atomic
from digitlab.atomic import (
    atomic_dir,
    atomic_file,
    check_folder_destination,
    check_writable_location,
    write_json,
)
from digitlab.errors import DigitlabError, OutputError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _write_then_fail(context, name: str | None, error: BaseException) -> None:
    """Write into what ``context`` yields (a file, or ``name`` in a folder), then fail."""
    with context as target:
        (target if name is None else target / name).write_text("half")
        raise error


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_and_folders_follow_the_umask(tmp_path, monkeypatch, umask) -> None:
    monkeypatch.setattr(atomic, "_UMASK", umask)
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "run") as folder:
        (folder / "f.txt").write_text("x")
    assert _mode(tmp_path / "a.json") == 0o666 & ~umask
    assert _mode(tmp_path / "run") == 0o777 & ~umask


def test_the_real_umask_is_read_once_and_left_as_it_was() -> None:
    now = os.umask(0o022)
    os.umask(now)
    assert atomic._UMASK == now


def test_a_failed_file_leaves_nothing_and_keeps_the_old_one(tmp_path) -> None:
    (tmp_path / "m.json").write_text("old")
    with pytest.raises(RuntimeError):
        _write_then_fail(atomic_file(tmp_path / "m.json"), None, RuntimeError("stopped"))
    assert (tmp_path / "m.json").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_an_os_error_while_writing_names_the_destination(tmp_path) -> None:
    with pytest.raises(OutputError, match=r"m\.json: cannot write \(No space left") as caught, \
            atomic_file(tmp_path / "m.json"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert caught.value.source == str(tmp_path / "m.json")
    assert isinstance(caught.value, OSError)  # optional writers (the cache) still catch OSError
    assert isinstance(caught.value, DigitlabError)  # the CLI's one line and exit 2
    assert _leftovers(tmp_path) == []


def test_an_error_inside_a_folder_names_the_file_at_its_final_place(tmp_path) -> None:
    with pytest.raises(OutputError) as caught, atomic_dir(tmp_path / "run") as folder, \
            atomic_file(folder / "figures" / "a.png"):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    assert caught.value.source == str(tmp_path / "run" / "figures" / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_a_new_folder_appears_whole_or_not_at_all(tmp_path) -> None:
    dest = tmp_path / "deep" / "run"
    with pytest.raises(KeyboardInterrupt):
        _write_then_fail(atomic_dir(dest), "model.safetensors", KeyboardInterrupt())
    assert not dest.exists()
    assert _leftovers(tmp_path / "deep") == []
    with atomic_dir(dest) as folder:
        (folder / "model.safetensors").write_text("x")
        assert not dest.exists()  # nothing visible until the block ends
    assert (dest / "model.safetensors").read_text() == "x"


def test_merge_replaces_its_own_entries_and_keeps_the_users(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "stale.png").write_text("old figure")
    (run / "metrics.json").write_text("old")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        _write_then_fail(atomic_dir(run, merge=True), "metrics.json", RuntimeError())
    assert (run / "metrics.json").read_text() == "old"  # a failed run changes nothing
    assert sorted(p.name for p in run.iterdir()) == ["figures", "metrics.json", "notes.txt"]
    with atomic_dir(run, merge=True) as folder:
        (folder / "figures").mkdir()
        (folder / "figures" / "new.png").write_text("new figure")
        (folder / "metrics.json").write_text("new")
    assert (run / "metrics.json").read_text() == "new"
    assert [p.name for p in (run / "figures").iterdir()] == ["new.png"]  # figures/ as a whole
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in run.iterdir()) == ["figures", "metrics.json", "notes.txt"]
    assert _leftovers(tmp_path) == []


def test_keep_existing_the_first_writer_to_finish_wins_whole(tmp_path) -> None:
    # Two writers of the same run folder, interleaved as a cluster worker still finishing a
    # run and the resumed sweep's new run of it are: the one that finishes first stays whole.
    run = tmp_path / "runs" / "abc"
    with atomic_dir(run, keep_existing=True) as first:
        (first / "figures").mkdir()
        (first / "figures" / "first.png").write_text("first")
        (first / "metrics.json").write_text("first")
        with atomic_dir(run, keep_existing=True) as second:
            (second / "figures").mkdir()
            (second / "figures" / "second.png").write_text("second")
            (second / "metrics.json").write_text("second")
            (second / "model.safetensors").write_text("second")
        assert (run / "metrics.json").read_text() == "second"
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == [
        "figures", "figures/second.png", "metrics.json", "model.safetensors"]
    assert (run / "metrics.json").read_text() == "second"
    assert _leftovers(tmp_path / "runs") == []
    # a folder written before stays as it is; an empty one is filled
    with atomic_dir(run, keep_existing=True) as third:
        (third / "metrics.json").write_text("third")
    assert (run / "metrics.json").read_text() == "second"
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty", keep_existing=True) as folder:
        (folder / "metrics.json").write_text("new")
    assert (tmp_path / "empty" / "metrics.json").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_without_merge_a_users_folder_is_never_replaced(tmp_path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"), atomic_dir(tmp_path / "full"):
        pytest.fail("the block must not run")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_destinations_that_cannot_be_written_are_found_up_front(tmp_path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_folder_destination(a_file)
    with pytest.raises(OutputError, match=r"deeper: cannot be written: .*a-file is not a folder"):
        check_folder_destination(a_file / "run" / "deeper")
    with pytest.raises(OutputError, match=r"^/proc/digitlab-run: cannot be written: no new "
                       r"entries in /proc"):
        check_folder_destination("/proc/digitlab-run")
    with pytest.raises(OutputError, match=r"^/proc/x\.npz: cannot be written"):
        check_writable_location("/proc/x.npz")
    check_folder_destination(tmp_path / "new" / "run")  # fine, and creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_found_up_front(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="run: cannot be written: no new entries"):
            check_folder_destination(locked / "run")
    finally:
        locked.chmod(0o700)
