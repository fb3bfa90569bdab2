"""Write files and folders so that nothing half-written is ever left behind.

Everything is written under a temporary name in the destination's own folder
(so the final rename stays on one file system and is atomic) and renamed into
place only once it is complete. On any error the temporary is removed, and an
OS error on the way (disk full, file too large, read-only folder) becomes an
:class:`~digitlab.errors.OutputError` naming the destination.

:func:`check_folder_destination` finds the usual problems (not a folder, not
writable, someone else's files in the way) before any work starts, so a long
training run does not end in an error about where to put its results.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from digitlab.errors import OutputError, show_path


def _read_umask() -> int:
    # Reading the umask means setting it: done once, at import, before any thread runs.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _default_mode(directory: bool) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the process's umask.

    ``mkstemp`` and ``mkdtemp`` create 0600 and 0700 (private while written); the
    finished file or folder should be as readable as any other the user writes.
    """
    return (0o777 if directory else 0o666) & ~_UMASK


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; it becomes ``dest`` on success."""
    dest = Path(dest)
    with _output_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _output_errors(dest):
            yield tmp
            tmp.chmod(_default_mode(directory=False))
            tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str], *, merge: bool = False,
               keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; it becomes ``dest`` on success.

    With ``merge=False`` ``dest`` must not exist yet, or be an empty folder: a
    folder of the user's is never replaced. With ``merge=True`` (a run folder
    written again, a report written beside a model) ``dest`` may be a folder
    already: each entry of the finished temporary folder then replaces the
    entry of that name, and everything else in ``dest`` stays. Either way
    nothing in ``dest`` changes until the work in the ``with`` block is done.

    With ``keep_existing=True`` the first writer to finish wins: the finished
    folder is renamed to ``dest`` in one step, and when ``dest`` is by then a
    folder with something in it (a second writer of the same content, such as
    a sweep's run still finishing on a cluster worker while the resumed sweep
    runs it again) that folder stays whole and this one is dropped. Merging
    entry by entry could not promise that: two writers interleaving their
    renames leave a mix of both, or fail half way.
    """
    dest = Path(dest)
    check_folder_destination(dest, merge=merge or keep_existing)
    # Beside dest, or inside it when merging into it: renames never cross a file system.
    home = dest if merge and not keep_existing and dest.is_dir() else dest.parent
    with _output_errors(dest):
        home.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=home))
    try:
        with _output_errors(dest):
            yield tmp
            tmp.chmod(_default_mode(directory=True))
            if keep_existing:
                _rename_unless_written(tmp, dest)
            else:
                _move_into_place(tmp, dest)
    except OutputError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        inside = Path(exc.source)
        if inside.is_relative_to(tmp):  # name the file the user asked for, not our temporary
            raise OutputError(dest / inside.relative_to(tmp), exc.problem) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; into an existing ``dest``, entry by entry (renames only:
    no data is copied, so a full disk cannot stop it half way)."""
    if tmp.parent == dest:
        for entry in sorted(tmp.iterdir()):
            _replace(entry, dest / entry.name)
        tmp.rmdir()
        return
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)


def _rename_unless_written(tmp: Path, dest: Path) -> None:
    """Rename the folder ``tmp`` to ``dest`` unless ``dest`` already holds something: then
    ``dest`` stays and ``tmp`` goes. One rename either way, so a second writer never sees,
    nor leaves, a half-replaced folder (POSIX renames a folder over an empty one only)."""
    try:
        tmp.rename(dest)
    except OSError:
        if not (dest.is_dir() and any(dest.iterdir())):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(source: Path, target: Path) -> None:
    """``os.replace`` that also replaces a folder: the old one is moved aside, then removed."""
    if not (target.is_dir() and not target.is_symlink()) and not source.is_dir():
        source.replace(target)
        return
    aside = None
    if target.exists() or target.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        aside.rmdir()  # only the unique name is wanted: rename needs the target gone
        target.rename(aside)
    source.rename(target)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink()


def check_folder_destination(dest: str | os.PathLike[str], *, merge: bool = False) -> None:
    """Raise :class:`OutputError` unless :func:`atomic_dir` can write a folder at ``dest``.

    ``dest`` may be missing or an empty folder, or any folder when ``merge``;
    the nearest existing folder above it must take a new folder (tried for
    real: permission bits say nothing to root, nor about read-only mounts or
    ``/proc``). Call it before long work; it creates nothing that outlives it.
    """
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise OutputError(dest, "exists and is not a folder; choose a new destination")
        if merge:
            _probe(dest, dest)
            return
        with _output_errors(dest):
            if any(dest.iterdir()):
                raise OutputError(dest, "already exists and is not empty; choose a new destination")
    check_writable_location(dest)


def check_writable_location(dest: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputError` unless a new entry can be made at ``dest`` (the folders
    above it that do not exist yet included)."""
    dest = Path(dest)
    above = dest.absolute().parent
    while not (above.exists() or above.is_symlink()):
        above = above.parent
    if not above.is_dir():
        raise OutputError(dest, f"cannot be written: {show_path(above)} is not a folder")
    _probe(above, dest)


def _probe(folder: Path, dest: Path) -> None:
    """Make and remove a folder in ``folder``: the only sure test that it takes new entries."""
    try:
        Path(tempfile.mkdtemp(prefix=".digitlab-probe.", dir=folder)).rmdir()
    except OSError as exc:
        where = "" if folder == dest else f" in {show_path(folder)}"
        raise OutputError(dest, f"cannot be written: no new entries{where} "
                          f"({exc.strerror or exc})") from None


@contextlib.contextmanager
def _output_errors(dest: Path) -> Iterator[None]:
    """An OS error while writing ``dest`` becomes one :class:`OutputError` naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(dest, f"cannot write ({exc.strerror or exc})") from exc


def write_json(dest: str | os.PathLike[str], data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    import json

    with atomic_file(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
