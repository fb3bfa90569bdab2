"""Hostile inputs for every format digitlab reads, and a runner that judges the CLI's answer.

Issue 12: every bad input is answered with exit code 2 and one line that
names the file, never a traceback; memory stays bounded; nothing
half-written is left behind. Each case here builds its files in a fresh
folder (deterministically: a seeded generator per case) and returns the
command line to run and the file its error must name. :func:`run_case` runs
``python -m digitlab.cli ARGV`` in a subprocess and checks the answer:

- exit code 2 (a signal, a crash or exit 0/1 fail);
- stderr is one ``digitlab: error: ...`` line, optionally preceded by
  ``digitlab: warning: ...`` lines (data warnings, such as skipped stray
  files, are one line each and are allowed before the error); nothing else,
  no control characters in those lines, and nothing on stdout;
- no ``Traceback`` anywhere;
- the error line holds the simple name of the file the case targets (a name
  with spaces or control characters is matched by a plain token of it, since
  the exact escaping of such names is not this test's business; the case's
  temporary folder is cut out of the line first, so a name cannot match there);
- the case folder (inputs, and any output folder or file the command was
  pointed at) is exactly as before: no output folder, no temporary file, no
  changed input, no unpickled side effect.

Limits of the child: address space 1 GiB (RLIMIT_AS; a clean
``digitlab data info mnist-sample``, ``train``, ``inspect`` and the torch
import all fit in it, so a MemoryError means the input was not bounded), CPU
time 300 s (a guard against endless loops, not a wall clock: no case needs
more than a few seconds) and, for the full-disk cases, RLIMIT_FSIZE with
SIGXFSZ ignored so writes fail with EFBIG. The limits are set by a tiny
launcher that then execs ``python -m digitlab.cli``: the same process image as
the plain command, without ``preexec_fn``, which is unsafe while the parent
runs threads (the standalone runner's pool, the FIFO feeders). The child gets
its own DIGITLAB_DATA and DIGITLAB_CACHE, one BLAS/OpenMP thread, and no
colour; matplotlib's font cache is built once beforehand, so a "disk full"
child never has to write it.

Controls (:data:`CONTROLS`): the unbroken material of every family of cases
must load (exit 0) under the same limits, so a case fails because of what it
broke, not because of its base or the limits.

Standalone: ``PYTHONPATH=src python tests/hostile.py [-j JOBS] [SUBSTRING ...]`` runs the
cases (all, or those whose name holds a SUBSTRING) and prints one row per
case: name, pass/fail/skip, reason.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ADDRESS_SPACE = 1 << 30  # 1 GiB for every case (see the module docstring)
CPU_SECONDS = 300
BOMB_BYTES = 1_600_000_000  # what each decompression bomb expands to: > 1.5 GB, > the limit
EXIT_USAGE = 2
ERROR_PREFIX = "digitlab: error: "
WARNING_PREFIX = "digitlab: warning: "
_MIB = 1 << 20
# A loader that catches every exception turns a MemoryError (the limit doing its job) into
# an error line; these are its traces: numpy's and Python's texts, or an empty "()".
SWALLOWED = re.compile(r"MemoryError|[Uu]nable to allocate|[Cc]annot allocate memory|\(\)\s*$")


# ---------------------------------------------------------------- cases


@dataclass
class Setup:
    """What a case built: the command to run and what its error must name.

    Attributes
    ----------
    argv : list of str
        Arguments after ``digitlab``.
    needles : tuple of str
        Plain tokens (no spaces or control characters); the error line must
        hold at least one: normally the target file's name.
    fifos : tuple of Path
        FIFOs the runner feeds a few garbage bytes to, so a reader that opens
        one gets data and an end instead of blocking forever.
    fsize : int, optional
        RLIMIT_FSIZE for the child: the largest file it may write ("disk full").
    needs_non_root : bool
        A permission case: root ignores file modes, so it is skipped as root.
    chmod_back : tuple of Path
        Folders whose mode the case lowered, restored after the run.
    """

    argv: list[str]
    needles: tuple[str, ...]
    fifos: tuple[Path, ...] = ()
    fsize: int | None = None
    needs_non_root: bool = False
    chmod_back: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Setup]


CASES: list[Case] = []


def _add(name: str, build: Callable[[Path], Setup]) -> None:
    if any(c.name == name for c in CASES):
        raise ValueError(f"duplicate case name {name!r}")
    CASES.append(Case(name, build))


def case_names() -> list[str]:
    return [c.name for c in CASES]


def get_case(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)


def rng_for(name: str) -> np.random.Generator:
    """The case's own seeded generator: same case, same bytes, on every run."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def info(path: Path, *extra: str) -> list[str]:
    return ["data", "info", str(path), *extra]


# ---------------------------------------------------------------- valid material


def noise_images(rng: np.random.Generator, n: int, h: int = 28, w: int = 28) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)


def digit_labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.int64)


def png_of(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_of(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def digit_picture(rng: np.random.Generator, h: int = 28, w: int = 28) -> np.ndarray:
    """A white stroke on black, so prediction has a digit to find."""
    image = np.zeros((h, w), dtype=np.uint8)
    image[h // 5 : h - h // 5, w // 2 - max(1, w // 10) : w // 2 + max(1, w // 10)] = 255
    image[rng.integers(0, h), rng.integers(0, w)] = 128  # a pinch of the case's own noise
    return image


# ---------------------------------------------------------------- raw formats


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file: two zero bytes, the dtype code, the rank, big-endian dims, the data."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def idx_of(array: np.ndarray) -> bytes:
    return idx_bytes(0x08, array.shape, np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = png_chunk(b"IEND", b"")


def png_raw(w: int, h: int, depth: int, colour: int, idat: bytes, *, extra: bytes = b"") -> bytes:
    """A PNG assembled chunk by chunk: IHDR (any values), ``extra`` chunks, one IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + PNG_IEND


def npy_header(descr: str, shape: tuple[int, ...], *, fortran: bool = False) -> bytes:
    """A version-1.0 .npy header declaring ``descr`` and ``shape``; the data is not included."""
    text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * (pad % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def npy_of(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@dataclass
class ZipMember:
    """One member of a hand-built zip: already-compressed bytes and what they expand to."""

    name: str
    data: bytes  # as stored (deflated when method is 8)
    crc: int
    size: int  # uncompressed size
    method: int = 8

    @classmethod
    def deflated(cls, name: str, raw: bytes) -> ZipMember:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return cls(name, c.compress(raw) + c.flush(), zlib.crc32(raw), len(raw))

    @classmethod
    def stored(cls, name: str, raw: bytes) -> ZipMember:
        return cls(name, raw, zlib.crc32(raw), len(raw), method=0)


def zip_bytes(members: Iterable[ZipMember]) -> bytes:
    """A zip archive written by hand, so a member may lie or expand to gigabytes."""
    out, central = io.BytesIO(), io.BytesIO()
    count = 0
    for m in members:
        name = m.name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, m.method, 0, 0x21,
                              m.crc, len(m.data), m.size, len(name), 0))
        out.write(name + m.data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, m.method, 0,
                                  0x21, m.crc, len(m.data), m.size, len(name), 0, 0, 0, 0, 0,
                                  offset))
        central.write(name)
        count += 1
    start = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count,
                          len(central.getvalue()), start, 0))
    return out.getvalue()


def npz_of(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def mat_of(variables: Mapping[str, object], *, compress: bool = False) -> bytes:
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, variables, do_compression=compress)
    return buffer.getvalue()


def csv_rows(images: np.ndarray, labels: np.ndarray, *, header: bool = True) -> list[str]:
    """A Kaggle digit-recognizer CSV as lines (no line ends): label, pixel0..pixelN."""
    n, h, w = images.shape
    lines = [",".join(["label"] + [f"pixel{i}" for i in range(h * w)])] if header else []
    for label, image in zip(labels.tolist(), images.reshape(n, -1).tolist(), strict=True):
        lines.append(",".join(map(str, [label, *image])))
    return lines


# ---------------------------------------------------------------- bombs (tiny on disk)


@functools.lru_cache(maxsize=1)
def _zero_mib_deflated() -> bytes:
    """One MiB of zeros, raw-deflated and ended by a full flush (byte-aligned, no history)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(_MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(_MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    if first != again:  # the trick below relies on it; zlib has always behaved so
        raise RuntimeError("zlib does not repeat a full-flushed block")
    return first


def deflate_with_zeros(prefix: bytes, zeros: int, suffix: bytes = b"") -> bytes:
    """Raw deflate of ``prefix + bytes(zeros) + suffix`` without ever holding the zeros.

    After a full flush deflate keeps no history, so one compressed MiB of zeros
    can be repeated: 1.5 GB becomes about 1.5 MB, built in milliseconds.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(zeros, _MIB)
    tail = c.compress(bytes(rest) + suffix) + c.flush()
    return head + _zero_mib_deflated() * whole + tail


@functools.lru_cache(maxsize=32)
def _crc_of_zeros(crc: int, zeros: int) -> int:
    block = bytes(_MIB)
    whole, rest = divmod(zeros, _MIB)
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(bytes(rest), crc)


def crc_with_zeros(prefix: bytes, zeros: int, suffix: bytes = b"") -> int:
    return zlib.crc32(suffix, _crc_of_zeros(zlib.crc32(prefix), zeros))


def adler_with_zeros(prefix: bytes, zeros: int, suffix: bytes = b"") -> int:
    """Adler-32 in closed form over the zeros: ``a`` stays, ``b`` grows by ``a`` per byte."""
    value = zlib.adler32(prefix)
    a, b = value & 0xFFFF, value >> 16
    b = (b + zeros * a) % 65521
    return zlib.adler32(suffix, (b << 16) | a)


def gzip_bomb(prefix: bytes, zeros: int, suffix: bytes = b"") -> bytes:
    """A valid gzip file (right CRC and length) of ``prefix + bytes(zeros) + suffix``."""
    size = len(prefix) + zeros + len(suffix)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
            + deflate_with_zeros(prefix, zeros, suffix)
            + struct.pack("<II", crc_with_zeros(prefix, zeros, suffix), size & 0xFFFFFFFF))


def zlib_bomb(prefix: bytes, zeros: int, suffix: bytes = b"") -> bytes:
    """A valid zlib stream (right Adler-32) of ``prefix + bytes(zeros) + suffix``."""
    return (b"\x78\xda" + deflate_with_zeros(prefix, zeros, suffix)
            + struct.pack(">I", adler_with_zeros(prefix, zeros, suffix)))


def zip_bomb_member(name: str, prefix: bytes, zeros: int) -> ZipMember:
    return ZipMember(name, deflate_with_zeros(prefix, zeros), crc_with_zeros(prefix, zeros),
                     len(prefix) + zeros)


def constant_png(side: int, depth: int, colour: int) -> bytes:
    """A real ``side`` x ``side`` PNG of one colour (all zero bytes): a few hundred KB on disk."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = 1 + (side * channels * depth + 7) // 8
    extra = png_chunk(b"PLTE", b"\0\0\0") if colour == 3 else b""
    return png_raw(side, side, depth, colour, zlib_bomb(b"", row * side), extra=extra)


# ---------------------------------------------------------------- file system helpers


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def symlink(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def is_plain(token: str) -> bool:
    """Whether ``token`` can be looked for as is, whatever way a path holding it is escaped."""
    return bool(token) and all(ch.isprintable() and not ch.isspace() and ch not in "\\'\""
                               for ch in token)


# ---------------------------------------------------------------- running


_LAUNCHER = """\
import os, resource, signal, sys
address, cpu, fsize = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (address, address))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
if fsize >= 0:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a too-big write fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
os.execv(sys.executable, [sys.executable, "-m", "digitlab.cli", *sys.argv[4:]])
"""


def command(argv: list[str], *, fsize: int | None = None,
            address_space: int = ADDRESS_SPACE) -> list[str]:
    """``python -m digitlab.cli ARGV`` under the limits, through the launcher."""
    return [sys.executable, "-c", _LAUNCHER, str(address_space), str(CPU_SECONDS),
            str(-1 if fsize is None else fsize), *argv]


def child_env(home: Path) -> dict[str, str]:
    """The environment of a case: its own data and cache folders, this digitlab, plain output."""
    import digitlab

    src = str(Path(digitlab.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "PYTHONWARNINGS", "CLICOLOR_FORCE", "PYTEST_XDIST_WORKER")}
    env.update(
        DIGITLAB_DATA=str(home / "data"), DIGITLAB_CACHE=str(home / "cache"),
        PYTHONPATH=os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
        # One thread per pool: the memory bound is about the input, not thread stacks.
        OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
        NO_COLOR="1", TERM="dumb",
    )
    return env


@functools.lru_cache(maxsize=1)
def _warm_matplotlib() -> None:
    """Build matplotlib's font cache once, unlimited: a "disk full" child must not need to."""
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True,
                   capture_output=True)


class _FifoFeeder:
    """Writes a few garbage bytes into each FIFO once a reader opens it, then closes it.

    A reader of a FIFO nobody writes to would block forever; fed, it sees
    data and an end. After the run, a writer still waiting (the command never
    opened the FIFO) is released by opening the read end here.
    """

    PAYLOAD = b"this FIFO is not a data file\n" * 4

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.paths = paths
        self.threads = [threading.Thread(target=self._feed, args=(p,), daemon=True) for p in paths]

    def _feed(self, path: Path) -> None:
        try:
            with path.open("wb") as pipe:
                pipe.write(self.PAYLOAD)
        except OSError:
            pass  # the reader left early: nothing to feed

    def __enter__(self) -> _FifoFeeder:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for path, thread in zip(self.paths, self.threads, strict=True):
            if thread.is_alive():
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    thread.join()
                finally:
                    os.close(fd)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (links not followed): kind, and size, mtime and mode of files.

    Folder times are left out: a temporary made and removed changes them
    without leaving anything behind.
    """
    state: dict[str, tuple[object, ...]] = {}

    def walk(folder: str, rel: str) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            key = rel + entry.name
            if stat.S_ISDIR(st.st_mode):
                state[key] = ("dir", stat.S_IMODE(st.st_mode))
                walk(entry.path, key + "/")
            elif stat.S_ISREG(st.st_mode):
                state[key] = ("file", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
            else:
                state[key] = ("other", stat.S_IFMT(st.st_mode))

    walk(os.fspath(root), "")
    return state


def snapshot_changes(before: dict[str, tuple[object, ...]],
                     after: dict[str, tuple[object, ...]]) -> list[str]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    notes = [f"+{k!r}" for k in added] + [f"-{k!r}" for k in removed]
    notes += [f"~{k!r}" for k in changed]
    return notes


@dataclass
class Outcome:
    name: str
    status: str  # "pass", "fail" or "skip"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    argv: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)

    def explain(self) -> str:
        """A failure message for pytest: the problems, the command, and what it printed."""
        shown_err = self.stderr if len(self.stderr) < 4000 else "..." + self.stderr[-4000:]
        return (f"{self.name}: {self.reason}\n  argv: {self.argv!r}\n  exit code: "
                f"{self.returncode}\n  stdout: {self.stdout[-2000:]!r}\n  stderr:\n{shown_err}")


def check_result(returncode: int, stdout: str, stderr: str, needles: tuple[str, ...],
                 changes: list[str], *, workdir: str = "") -> list[str]:
    """Everything wrong with a command's answer to a hostile input (empty list: all good).

    ``workdir`` (the case's temporary folder) is cut out of the error line
    before the needles are looked for, so they cannot match by accident in
    a temporary folder's name.
    """
    problems: list[str] = []
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if "Traceback" in stderr or "Traceback" in stdout:
        kind = "MemoryError (memory not bounded)" if "MemoryError" in last else "traceback"
        problems.append(f"{kind}: {last[:300]}")
    if returncode < 0:
        problems.append(f"killed by signal {-returncode}")
    elif returncode != EXIT_USAGE:
        problems.append(f"exit code {returncode}, expected {EXIT_USAGE}")
    if stdout.strip():
        problems.append(f"printed on stdout: {stdout.strip()[:120]!r}")
    lines = stderr.removesuffix("\n").split("\n") if stderr else []
    error_lines = [line for line in lines if line.startswith(ERROR_PREFIX)]
    others = [line for line in lines
              if not line.startswith((ERROR_PREFIX, WARNING_PREFIX))]
    if not error_lines:
        problems.append("no 'digitlab: error:' line on stderr")
    elif len(error_lines) > 1 or others or lines[-1] is not error_lines[-1]:
        problems.append(f"stderr is {len(lines)} lines, expected one error line "
                        f"(after any warning lines)")
    if error_lines:
        line = error_lines[-1]
        if not line[len(ERROR_PREFIX):].strip():
            problems.append("empty error message")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in line):
            problems.append("control character in the error line")
        if SWALLOWED.search(line):
            problems.append("the message hides an out-of-memory error (or an exception with no "
                            "text), caught instead of prevented")
        searched = line.replace(workdir, "") if workdir else line
        if not any(needle in searched for needle in needles):
            problems.append(f"error line does not name {' or '.join(map(repr, needles))}: "
                            f"{line[:200]!r}")
    if changes:
        shown = ", ".join(changes[:4]) + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")
        problems.append(f"left changes behind: {shown}")
    return problems


def run_case(case: Case, workdir: Path) -> Outcome:
    """Build ``case`` under ``workdir``, run its command under the limits, judge the answer."""
    case_dir, home = workdir / "case", workdir / "home"
    case_dir.mkdir(parents=True)
    home.mkdir()
    setup = case.build(case_dir)
    if setup.needs_non_root and os.geteuid() == 0:
        _restore_modes(setup)
        return Outcome(case.name, "skip", ["runs as root, which ignores file permissions"],
                       argv=setup.argv)
    for needle in setup.needles:
        if not is_plain(needle):
            raise ValueError(f"{case.name}: needle {needle!r} is not a plain token")
    if setup.fsize is not None:
        _warm_matplotlib()
    before = snapshot(case_dir)
    started = time.perf_counter()
    try:
        with _FifoFeeder(setup.fifos):
            result = subprocess.run(
                command(setup.argv, fsize=setup.fsize), stdin=subprocess.DEVNULL,
                capture_output=True, env=child_env(home), cwd=case_dir, check=False,
            )
    finally:
        _restore_modes(setup)
    seconds = time.perf_counter() - started
    stdout = result.stdout.decode("utf-8", "backslashreplace")
    stderr = result.stderr.decode("utf-8", "backslashreplace")
    problems = check_result(result.returncode, stdout, stderr, setup.needles,
                            snapshot_changes(before, snapshot(case_dir)),
                            workdir=os.fspath(workdir))
    return Outcome(case.name, "fail" if problems else "pass", problems, seconds,
                   result.returncode, stdout, stderr, setup.argv)


def _restore_modes(setup: Setup) -> None:
    for path in setup.chmod_back:
        path.chmod(0o755)


# ---------------------------------------------------------------- the catalogue

# Every case builds its inputs inside its own folder ("case"), deterministically
# from its name, and returns the command and the name(s) its error must hold.
# Entries of a folder are given as {relative path: Entry}: bytes for a file,
# or one of the special entries below.


@dataclass(frozen=True)
class Fifo:
    """A named pipe (the runner feeds it; see _FifoFeeder)."""


@dataclass(frozen=True)
class Link:
    """A symbolic link to ``target`` (/dev/zero, a missing file, itself ...)."""

    target: str


@dataclass(frozen=True)
class Folder:
    """An empty folder (a folder where a file is expected, or an empty class)."""


Entry = bytes | Fifo | Link | Folder


def materialise(root: Path, entries: dict[str, Entry]) -> tuple[Path, ...]:
    """Create ``entries`` under ``root``; return the FIFOs made."""
    fifos: list[Path] = []
    for rel, entry in entries.items():
        path = root / rel
        if isinstance(entry, bytes):
            write(path, entry)
        elif isinstance(entry, Fifo):
            fifos.append(fifo(path))
        elif isinstance(entry, Link):
            symlink(path, entry.target)
        else:
            path.mkdir(parents=True, exist_ok=True)
    return tuple(fifos)


def flip(data: bytes, at: int) -> bytes:
    """``data`` with the byte at ``at`` inverted."""
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def tiny_npz(rng: np.random.Generator) -> bytes:
    """A valid little Keras .npz: 30 train and 10 test 28x28 digits (noise), labels 0..9."""
    return npz_of(x_train=noise_images(rng, 30), y_train=digit_labels(30),
                  x_test=noise_images(rng, 10), y_test=digit_labels(10))


# ---------------------------------------------------------------- IDX folders

TI, TL = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
EI, EL = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
IDX_FOLDER = "mnist-idx"
FileEdit = Callable[[dict[str, Entry], np.random.Generator], tuple[str, ...]]


def _idx_files(rng: np.random.Generator) -> dict[str, Entry]:
    return {TI: idx_of(noise_images(rng, 20)), TL: idx_of(digit_labels(20)),
            EI: idx_of(noise_images(rng, 10)), EL: idx_of(digit_labels(10))}


def _set(name: str, make: Callable[[bytes, np.random.Generator], Entry],
         *also: str, rename: str | None = None) -> FileEdit:
    """Replace file ``name`` (optionally under a new name) by ``make(old bytes, rng)``."""

    def edit(files: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        old = files.pop(name)
        assert isinstance(old, bytes)
        new = rename or name
        files[new] = make(old, rng)
        return (new, *also)

    return edit


def _drop(name: str, *needles: str) -> FileEdit:
    def edit(files: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        del files[name]
        return needles

    return edit


def _idx_header(code: int, shape: tuple[int, ...]) -> bytes:
    return idx_bytes(code, shape, b"")


def _typed_idx(code: int, dtype: str, shape: tuple[int, ...], value: float) -> bytes:
    return idx_bytes(code, shape, np.full(shape, value, dtype=dtype).tobytes())


def _first_bytes(count: int) -> Callable[[bytes, np.random.Generator], bytes]:
    return lambda data, rng: data[:count]


def _register_idx() -> None:
    def images_header(shape: tuple[int, ...], payload: bytes | None = None):
        return lambda b, r: idx_bytes(0x08, shape, b[16:] if payload is None else payload)

    n_bomb = BOMB_BYTES // 784
    edits: dict[str, FileEdit] = {}
    for cut in (0, 4, 10, 116):
        edits[f"images-cut-at-{cut}"] = _set(TI, _first_bytes(cut))
    edits["images-cut-last-byte"] = _set(TI, lambda b, r: b[:-1])
    for cut in (3,):
        edits[f"labels-cut-at-{cut}"] = _set(TL, _first_bytes(cut))
    edits["labels-cut-last-byte"] = _set(TL, lambda b, r: b[:-1])
    edits["images-random-bytes"] = _set(TI, lambda b, r: r.bytes(len(b)))
    edits["images-magic-0100"] = _set(TI, lambda b, r: b"\x01\x00" + b[2:])
    edits["images-dtype-code-07"] = _set(TI, lambda b, r: b[:2] + b"\x07" + b[3:])
    edits["images-rank-0"] = _set(TI, lambda b, r: b[:3] + b"\x00" + b[4:])
    edits["images-rank-255"] = _set(TI, lambda b, r: b[:3] + b"\xff" + b[4:])
    edits["images-rank-1"] = _set(TI, images_header((20 * 784,)))
    edits["labels-rank-2"] = _set(TL, lambda b, r: idx_bytes(0x08, (20, 1), b[8:]))
    edits["images-count-21-of-20"] = _set(TI, images_header((21, 28, 28)))
    edits["images-count-19-of-20"] = _set(TI, images_header((19, 28, 28)))
    edits["images-count-0"] = _set(TI, images_header((0, 28, 28), b""), TL)
    edits["images-rows-0"] = _set(TI, images_header((20, 0, 28), b""))
    edits["images-count-2e31"] = _set(TI, images_header((2**31, 28, 28)))
    edits["images-dims-all-max"] = _set(TI, images_header((2**32 - 1,) * 3))
    edits["images-trailing-garbage"] = _set(TI, lambda b, r: b + r.bytes(5))
    edits["labels-trailing-garbage"] = _set(TL, lambda b, r: b + b"\x07")
    edits["images-float-nan"] = _set(TI, lambda b, r: _typed_idx(0x0D, ">f4", (20, 28, 28), np.nan))
    edits["images-float-300"] = _set(TI, lambda b, r: _typed_idx(0x0D, ">f4", (20, 28, 28), 300.0))
    edits["images-int16-negative"] = _set(TI, lambda b, r: _typed_idx(0x0B, ">i2", (20, 28, 28), -5))
    edits["labels-float-nan"] = _set(TL, lambda b, r: _typed_idx(0x0D, ">f4", (20,), np.nan))
    edits["labels-float-2.5"] = _set(TL, lambda b, r: _typed_idx(0x0D, ">f4", (20,), 2.5))
    edits["labels-int8-negative"] = _set(TL, lambda b, r: _typed_idx(0x09, "i1", (20,), -1))
    edits["labels-int32-2e31"] = _set(TL, lambda b, r: _typed_idx(0x0C, ">i4", (20,), 2**31 - 1))
    edits["labels-19-for-20-images"] = _set(TL, lambda b, r: idx_of(digit_labels(19)), TI)
    edits["test-labels-11-for-10-images"] = _set(EL, lambda b, r: idx_of(digit_labels(11)), EI)
    edits["images-gz-cut-in-half"] = _set(
        TI, lambda b, r: gzip.compress(b, mtime=0)[: len(gzip.compress(b, mtime=0)) // 2],
        rename=TI + ".gz")
    edits["images-gz-bad-crc"] = _set(
        TI, lambda b, r: flip(gzip.compress(b, mtime=0), -8 + len(gzip.compress(b, mtime=0))),
        rename=TI + ".gz")
    edits["images-gz-bomb"] = _set(
        TI, lambda b, r: gzip_bomb(_idx_header(0x08, (n_bomb, 28, 28)), n_bomb * 784),
        rename=TI + ".gz")
    edits["labels-gz-bomb"] = _set(
        TL, lambda b, r: gzip_bomb(_idx_header(0x08, (BOMB_BYTES,)), BOMB_BYTES),
        rename=TL + ".gz")
    edits["images-gz-bomb-after-valid-data"] = _set(
        TI, lambda b, r: gzip_bomb(b, BOMB_BYTES), rename=TI + ".gz")
    edits["labels-missing"] = _drop(TL, IDX_FOLDER)
    edits["test-images-missing"] = _drop(EI, IDX_FOLDER)
    edits["test-images-20x20"] = _set(EI, lambda b, r: idx_of(noise_images(r, 10, 20, 20)),
                                      IDX_FOLDER)
    edits["images-symlink-dev-zero"] = _set(TI, lambda b, r: Link("/dev/zero"), IDX_FOLDER)
    edits["labels-fifo"] = _set(TL, lambda b, r: Fifo(), IDX_FOLDER)
    edits["images-is-a-folder"] = _set(TI, lambda b, r: Folder(), IDX_FOLDER)
    for name, edit in edits.items():
        _add_idx_case(name, edit)
    _add_idx_case("folder-name-newline", _set(TI, lambda b, r: b[:10]), folder="idx\nzq1")


def _add_idx_case(name: str, edit: FileEdit, folder: str = IDX_FOLDER) -> None:
    full = "idx-" + name

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        files = _idx_files(rng)
        needles = edit(files, rng)
        root = case_dir / folder
        root.mkdir()
        return Setup(info(root), needles, fifos=materialise(root, files))

    _add(full, build)


# ---------------------------------------------------------------- Keras .npz


NPZ = "keras-q.npz"
Arrays = dict[str, np.ndarray]


class Trap:
    """Unpickling one makes a folder: proof that a loader ran pickle (the snapshot sees it)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def _npz_arrays(rng: np.random.Generator) -> Arrays:
    return {"x_train": noise_images(rng, 20), "y_train": digit_labels(20),
            "x_test": noise_images(rng, 10), "y_test": digit_labels(10)}


def _npz_with(arrays: Arrays, **changes: np.ndarray | None) -> bytes:
    merged = {**arrays, **changes}
    return npz_of(**{k: v for k, v in merged.items() if v is not None})


def _npz_members(arrays: Arrays, **changes: ZipMember) -> bytes:
    """An npz built by hand: members from ``arrays`` unless ``changes`` gives one."""
    members = [changes.pop(key) if key in changes else
               ZipMember.deflated(f"{key}.npy", npy_of(value)) for key, value in arrays.items()]
    return zip_bytes([*members, *changes.values()])


def _trap_array(case_dir: Path, n: int) -> np.ndarray:
    array = np.empty(n, dtype=object)
    for i in range(n):
        array[i] = Trap(str(case_dir / "UNPICKLED"))
    return array


NpzMake = Callable[[Arrays, np.random.Generator, Path], Entry]


def _register_npz() -> None:
    n_bomb = BOMB_BYTES // 784
    x20 = (20, 28, 28)
    makes: dict[str, NpzMake] = {}

    def cut(point: str) -> NpzMake:
        def make(a: Arrays, r: np.random.Generator, d: Path) -> bytes:
            data = _npz_with(a)
            at = {"0": 0, "10": 10, "30": 30, "half": len(data) // 2,
                  "end-record": len(data) - 22, "last-byte": len(data) - 1}[point]
            return data[:at]
        return make

    for point in ("0", "30", "half", "end-record"):
        makes[f"cut-at-{point}"] = cut(point)
    makes["random-bytes"] = lambda a, r, d: r.bytes(3000)
    makes["zip-magic-then-random"] = lambda a, r, d: b"PK\x03\x04" + r.bytes(3000)
    makes["member-random-bytes"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.deflated("x_train.npy", r.bytes(3000)))
    makes["single-npy"] = lambda a, r, d: npy_of(a["x_train"])
    makes["only-x-train"] = lambda a, r, d: npz_of(x_train=a["x_train"])
    makes["wrong-keys"] = lambda a, r, d: npz_of(images=a["x_train"], labels=a["y_train"])
    makes["y-test-without-x-test"] = lambda a, r, d: _npz_with(a, x_test=None)
    makes["x-1d"] = lambda a, r, d: _npz_with(a, x_train=a["x_train"].ravel())
    makes["x-rgb"] = lambda a, r, d: _npz_with(a, x_train=np.stack([a["x_train"]] * 3, -1))
    makes["x-783-columns"] = lambda a, r, d: _npz_with(a, x_train=noise_images(r, 20)
                                                       .reshape(20, -1)[:, :783])
    makes["x-empty"] = lambda a, r, d: _npz_with(
        a, x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.int64))
    makes["x-rows-0"] = lambda a, r, d: _npz_with(a, x_train=np.zeros((20, 0, 28), np.uint8))
    makes["x-float-nan"] = lambda a, r, d: _npz_with(a, x_train=np.full(x20, np.nan, np.float32))
    makes["x-float-negative"] = lambda a, r, d: _npz_with(a, x_train=np.full(x20, -5.0))
    makes["x-int-300"] = lambda a, r, d: _npz_with(a, x_train=np.full(x20, 300, np.int16))
    makes["x-complex"] = lambda a, r, d: _npz_with(a, x_train=np.ones(x20, np.complex64))
    makes["x-text"] = lambda a, r, d: _npz_with(a, x_train=np.full(x20, "abc"))
    makes["x-structured"] = lambda a, r, d: _npz_with(a, x_train=np.zeros(x20, [("v", "u1")]))
    makes["y-fraction"] = lambda a, r, d: _npz_with(a, y_train=np.full(20, 2.5))
    makes["y-nan"] = lambda a, r, d: _npz_with(a, y_train=np.full(20, np.nan))
    makes["y-negative"] = lambda a, r, d: _npz_with(a, y_train=np.full(20, -1))
    makes["y-4e9"] = lambda a, r, d: _npz_with(a, y_train=np.full(20, 4_000_000_000))
    makes["y-text"] = lambda a, r, d: _npz_with(a, y_train=np.full(20, "seven"))
    makes["y-one-hot"] = lambda a, r, d: _npz_with(a, y_train=np.eye(10)[digit_labels(20)])
    makes["y-19-for-20"] = lambda a, r, d: _npz_with(a, y_train=digit_labels(19))
    makes["y-test-11-for-10"] = lambda a, r, d: _npz_with(a, y_test=digit_labels(11))
    makes["test-images-20x20"] = lambda a, r, d: _npz_with(a, x_test=noise_images(r, 10, 20, 20))
    makes["x-pickled-objects"] = lambda a, r, d: zip_bytes([
        ZipMember.deflated("x_train.npy", npy_of(_trap_array(d, 20), allow_pickle=True)),
        ZipMember.deflated("y_train.npy", npy_of(a["y_train"]))])
    makes["y-pickled-objects"] = lambda a, r, d: zip_bytes([
        ZipMember.deflated("x_train.npy", npy_of(a["x_train"])),
        ZipMember.deflated("y_train.npy", npy_of(_trap_array(d, 20), allow_pickle=True))])
    makes["x-header-1tib"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.stored("x_train.npy", npy_header("|u1", (1 << 40,))))
    makes["x-header-1tib-deflated"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.deflated("x_train.npy", npy_header("<f8", (1 << 27, 28, 28))))
    makes["y-header-1tib"] = lambda a, r, d: _npz_members(
        a, y_train=ZipMember.stored("y_train.npy", npy_header("<i8", (1 << 37,))))
    makes["x-header-negative-shape"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.stored("x_train.npy", npy_header("|u1", (-1, 28, 28))))
    makes["x-header-bad-descr"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.stored("x_train.npy", npy_header("zzz", x20)))
    makes["x-header-length-lies"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.stored("x_train.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr'"))
    makes["x-header-version-9"] = lambda a, r, d: _npz_members(
        a, x_train=ZipMember.stored("x_train.npy", b"\x93NUMPY\x09\x00" + npy_of(a["x_train"])[8:]))
    makes["x-zip-bomb"] = lambda a, r, d: _npz_members(
        a, x_train=zip_bomb_member("x_train.npy", npy_header("|u1", (n_bomb, 28, 28)),
                                   n_bomb * 784))
    makes["y-zip-bomb"] = lambda a, r, d: _npz_members(
        a, y_train=zip_bomb_member("y_train.npy", npy_header("|u1", (BOMB_BYTES,)), BOMB_BYTES))
    makes["member-size-lies"] = lambda a, r, d: _npz_members(
        a, x_train=dataclass_replace(ZipMember.deflated("x_train.npy", npy_of(a["x_train"])),
                                     size=100))
    makes["member-crc-wrong"] = lambda a, r, d: _npz_members(
        a, x_train=dataclass_replace(ZipMember.deflated("x_train.npy", npy_of(a["x_train"])),
                                     crc=12345))
    for name, make in makes.items():
        _add_npz_case(name, make)
    _add_npz_case("symlink-dev-zero", lambda a, r, d: Link("/dev/zero"), "zero-q.npz")
    _add_npz_case("fifo", lambda a, r, d: Fifo(), "pipe-q.npz")
    _add_npz_case("folder", lambda a, r, d: Folder(), "dir-q.npz")
    _add_npz_case("name-newline", lambda a, r, d: r.bytes(500), "keras\nzq2.npz", "zq2.npz")
    _add_npz_case("name-spaces", lambda a, r, d: r.bytes(500), "my keras zq3.npz", "zq3.npz")


def dataclass_replace(member: ZipMember, *, size: int | None = None,
                      crc: int | None = None) -> ZipMember:
    """``member`` with a lying uncompressed size or CRC."""
    return ZipMember(member.name, member.data, member.crc if crc is None else crc,
                     member.size if size is None else size, member.method)


def _add_npz_case(name: str, make: NpzMake, filename: str = NPZ,
                  needle: str | None = None) -> None:
    full = "npz-" + name

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        entry = make(_npz_arrays(rng), rng, case_dir)
        fifos = materialise(case_dir, {filename: entry})
        return Setup(info(case_dir / filename), (needle or filename,), fifos=fifos)

    _add(full, build)


# ---------------------------------------------------------------- CSV

CSV = "digits-q.csv"
CsvMake = Callable[[list[str], np.random.Generator], Entry]


def _csv_lines(rng: np.random.Generator) -> list[str]:
    return csv_rows(noise_images(rng, 20), digit_labels(20))


def _text(lines: list[str], end: str = "\n") -> bytes:
    return (end.join(lines) + end).encode()


def _cell(lines: list[str], row: int, column: int, value: str) -> list[str]:
    """A copy of ``lines`` with one cell of data row ``row`` (1 = first) replaced."""
    cells = lines[row].split(",")
    cells[column] = value
    return [*lines[:row], ",".join(cells), *lines[row + 1 :]]


def _cell_text(row: int, column: int, value: str) -> CsvMake:
    return lambda lines, rng: _text(_cell(lines, row, column, value))


def _register_csv() -> None:
    makes: dict[str, CsvMake] = {
        "empty": lambda ls, r: b"",
        "header-only": lambda ls, r: _text(ls[:1]),
        "header-and-blank-lines": lambda ls, r: _text([ls[0], "", "  ", ""]),
        "bom-text-cell": lambda ls, r: b"\xef\xbb\xbf" + _text(_cell(ls, 3, 100, "abc")),
        "ragged-short-row": lambda ls, r: _text([*ls[:3], ls[3].rsplit(",", 1)[0], *ls[4:]]),
        "ragged-long-row": lambda ls, r: _text([*ls[:5], ls[5] + ",7", *ls[6:]]),
        "text-cell": lambda ls, r: _text(_cell(ls, 3, 100, "abc")),
        "empty-cell": lambda ls, r: _text(_cell(ls, 3, 100, "")),
        "quoted-comma-cell": lambda ls, r: _text(_cell(ls, 3, 100, '"12,5"')),
        "quoted-text-cell": lambda ls, r: _text(_cell(ls, 3, 100, '"abc"')),
        "label-column-999": lambda ls, r: _text(ls),
        "label-column-missing": lambda ls, r: _text(ls),
        "no-label-column": lambda ls, r: _text([ln.split(",", 1)[1] for ln in ls]),
        "eleven-columns": lambda ls, r: _text([",".join(ln.split(",")[:11]) for ln in ls]),
        "single-column": lambda ls, r: _text([ln.split(",")[0] for ln in ls]),
        "semicolons": lambda ls, r: _text([ln.replace(",", ";") for ln in ls]),
        "random-bytes": lambda ls, r: r.bytes(5000),
        "not-utf8-row": lambda ls, r: _text(_cell(ls, 10, 5, "QBADQ")).replace(b"QBADQ", b"\xff"),
        "utf16": lambda ls, r: "\n".join(ls).encode("utf-16"),
        "crlf-ragged-row": lambda ls, r: _text([*ls[:4], ls[4] + ",1", *ls[5:]], "\r\n"),
        "one-long-line-no-commas": lambda ls, r: b"1" * 10_000_000,
    }
    for value in ("256", "-1", "nan", "1e400", "0x10", "255.5"):
        makes[f"pixel-{value}"] = _cell_text(3, 100, value)
    for value in ("-1", "2.5", "nan", "seven", "4000000000", "1e300", ""):
        makes[f"label-{value or 'empty'}"] = _cell_text(3, 0, value)
    args = {"label-column-999": ["--label-column", "999"],
            "label-column-missing": ["--label-column", "digit"]}
    for name, make in makes.items():
        _add_csv_case(name, make, extra=args.get(name, []))
    gz = "digits-q.csv.gz"
    _add_csv_case("gz-cut-in-half", lambda ls, r: gzip.compress(_text(ls), mtime=0)[:3000], gz)
    _add_csv_case("gz-text-cell", lambda ls, r: gzip.compress(_text(_cell(ls, 3, 9, "abc")),
                                                              mtime=0), gz)
    _add_csv_case("gz-bomb-nul", lambda ls, r: gzip_bomb(b"", BOMB_BYTES), gz)
    _add_csv_case("gz-bomb-after-header", lambda ls, r: gzip_bomb(_text(ls[:1]), BOMB_BYTES), gz)
    _add_csv_case("gz-bomb-after-valid-rows", lambda ls, r: gzip_bomb(_text(ls), BOMB_BYTES), gz)
    _add_csv_case("symlink-dev-zero", lambda ls, r: Link("/dev/zero"), "zero-q.csv")
    _add_csv_case("fifo", lambda ls, r: Fifo(), "pipe-q.csv")
    _add_csv_case("folder", lambda ls, r: Folder(), "dir-q.csv")
    _add_csv_case("name-newline", lambda ls, r: _text(_cell(ls, 3, 100, "abc")),
                  "evil\nzq4.csv", needle="zq4.csv")
    _add_csv_case("name-spaces", lambda ls, r: _text(_cell(ls, 3, 100, "abc")),
                  "my digits zq5.csv", needle="zq5.csv")


def _add_csv_case(name: str, make: CsvMake, filename: str = CSV, *,
                  extra: list[str] | None = None, needle: str | None = None) -> None:
    full = "csv-" + name

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        fifos = materialise(case_dir, {filename: make(_csv_lines(rng), rng)})
        return Setup(info(case_dir / filename, *(extra or [])), (needle or filename,),
                     fifos=fifos)

    _add(full, build)


# ---------------------------------------------------------------- MATLAB .mat

MAT = "course-q.mat"
MatMake = Callable[[dict[str, np.ndarray], np.random.Generator], Entry]


def _mat_vars(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"X": rng.random((20, 400)),
            "y": (np.arange(20) % 10 + 1).reshape(-1, 1).astype(np.float64)}


def mat_matrix_start(name: bytes, dims: tuple[int, int], nbytes: int) -> bytes:
    """The bytes of a MATLAB v5 uint8 matrix element up to its data (``nbytes`` follow)."""
    flags = struct.pack("<IIII", 6, 8, 9, 0)  # miUINT32 array flags: class mxUINT8
    shape = struct.pack("<IIii", 5, 8, *dims)  # miINT32 dimensions
    label = struct.pack("<II", 1, len(name)) + name.ljust(8, b"\0")  # miINT8 name
    data = struct.pack("<II", 2, nbytes)  # miUINT8 real part
    body = len(flags) + len(shape) + len(label) + len(data) + nbytes + (-nbytes % 8)
    return struct.pack("<II", 14, body) + flags + shape + label + data  # miMATRIX


def mat_compressed_bomb(y: np.ndarray) -> bytes:
    """A valid v5 file: ``y``, then ``X`` (4,000,000 x 400 uint8 of zeros) in one zlib element."""
    dims = (BOMB_BYTES // 400, 400)
    stream = zlib_bomb(mat_matrix_start(b"X", dims, BOMB_BYTES), BOMB_BYTES)
    return mat_of({"y": y}) + struct.pack("<II", 15, len(stream)) + stream  # miCOMPRESSED


def _mat_v4_huge() -> bytes:
    """A MATLAB v4 header: a 40000 x 40000 double matrix named X, and no data."""
    return struct.pack("<iiiii", 0, 40000, 40000, 0, 2) + b"X\0" + bytes(64)


def _register_mat() -> None:
    def with_vars(**changes: object) -> MatMake:
        def make(v: dict[str, np.ndarray], r: np.random.Generator) -> bytes:
            merged = {**v, **{k: (c(v, r) if callable(c) else c) for k, c in changes.items()}}
            return mat_of({k: val for k, val in merged.items() if val is not None})
        return make

    def cut(at: int | str, compress: bool = False) -> MatMake:
        def make(v: dict[str, np.ndarray], r: np.random.Generator) -> bytes:
            data = mat_of(v, compress=compress)
            stop = len(data) // 2 if at == "half" else len(data) - 1 if at == "last" else int(at)
            return data[:stop]
        return make

    def cell(v: dict[str, np.ndarray], r: np.random.Generator) -> np.ndarray:
        out = np.empty((1, 2), dtype=object)
        out[0, 0], out[0, 1] = np.zeros(3), "a"
        return out

    makes: dict[str, MatMake] = {
        "empty": lambda v, r: b"",
        "random-bytes": lambda v, r: r.bytes(3000),
        "wrong-variable-names": lambda v, r: mat_of({"A": v["X"], "b": v["y"]}),
        "x-missing": with_vars(X=None),
        "y-missing": with_vars(y=None),
        "x-3d": with_vars(X=lambda v, r: r.random((20, 20, 20))),
        "x-401-columns": with_vars(X=lambda v, r: r.random((20, 401))),
        "x-text": with_vars(X="hello"),
        "x-cell": with_vars(X=cell),
        "y-cell": with_vars(y=cell),
        "y-one-hot": with_vars(y=np.eye(10)[digit_labels(20)]),
        "y-nan": with_vars(y=np.full((20, 1), np.nan)),
        "y-negative": with_vars(y=np.full((20, 1), -1.0)),
        "y-fraction": with_vars(y=np.full((20, 1), 2.5)),
        "y-4e9": with_vars(y=np.full((20, 1), 4e9)),
        "y-19-for-20": with_vars(y=lambda v, r: v["y"][:19]),
        "x-nan": with_vars(X=np.full((20, 400), np.nan)),
        "x-int-300": with_vars(X=np.full((20, 400), 300, np.int16)),
        "x-complex": with_vars(X=np.ones((20, 400), np.complex128)),
        "x-empty": with_vars(X=np.zeros((0, 400)), y=np.zeros((0, 1))),
        "v73-header": lambda v, r: (b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8)
                                    + b"\x00\x02IM" + r.bytes(500)),
        "v4-huge-dims": lambda v, r: _mat_v4_huge(),
        "zlib-bomb": lambda v, r: mat_compressed_bomb(v["y"]),
        "sparse-x-huge": with_vars(X=lambda v, r: _sparse(4_000_000, 400)),
        "element-size-lies": lambda v, r: _mat_lying_size(v),
    }
    for at in (4, 127, 200, "half", "last"):
        makes[f"cut-at-{at}"] = cut(at)
    for at in ("half",):
        makes[f"compressed-cut-at-{at}"] = cut(at, compress=True)
    for name, make in makes.items():
        _add_mat_case(name, make)
    _add_mat_case("symlink-dev-zero", lambda v, r: Link("/dev/zero"), "zero-q.mat")
    _add_mat_case("fifo", lambda v, r: Fifo(), "pipe-q.mat")
    _add_mat_case("folder", lambda v, r: Folder(), "dir-q.mat")
    _add_mat_case("name-newline", lambda v, r: r.bytes(700), "course\nzq6.mat", "zq6.mat")


def _sparse(rows: int, columns: int) -> object:
    from scipy.sparse import csc_matrix

    return csc_matrix((rows, columns), dtype=np.float64)


def _mat_lying_size(v: dict[str, np.ndarray]) -> bytes:
    """An uncompressed v5 file whose first element claims 2 GB more than the file holds."""
    data = bytearray(mat_of(v))
    (size,) = struct.unpack_from("<I", data, 132)  # the tag after the 128-byte header
    struct.pack_into("<I", data, 132, size + 0x7FFF0000)
    return bytes(data)


def _add_mat_case(name: str, make: MatMake, filename: str = MAT,
                  needle: str | None = None) -> None:
    full = "mat-" + name

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        fifos = materialise(case_dir, {filename: make(_mat_vars(rng), rng)})
        return Setup(info(case_dir / filename), (needle or filename,), fifos=fifos)

    _add(full, build)


# ---------------------------------------------------------------- pictures

PictureMake = Callable[[np.random.Generator], Entry]


def noise_png(rng: np.random.Generator, h: int = 28, w: int = 28) -> bytes:
    return png_of(noise_images(rng, 1, h, w)[0])


def idat_span(png: bytes) -> tuple[int, int]:
    """Start and end offsets of the first IDAT chunk's data."""
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        if kind == b"IDAT":
            return pos + 8, pos + 8 + length
        pos += 12 + length
    raise ValueError("no IDAT chunk")


def _cut_png(png: bytes, point: str) -> bytes:
    start, end = idat_span(png)
    at = {"signature-half": 4, "signature": 8, "in-ihdr": 20, "after-ihdr": 33,
          "idat-start": start, "idat-mid": (start + end) // 2, "idat-end": end - 6}[point]
    return png[:at]


def _mode_image(rng: np.random.Generator, mode: str, w: int = 27, h: int = 28) -> Image.Image:
    grey = Image.fromarray(noise_images(rng, 1, h, w)[0])
    if mode == "I;16":
        return Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    if mode in ("RGB", "RGBA", "LA"):
        return Image.merge(mode, [grey] * len(mode))
    if mode == "P":
        return Image.merge("RGB", [grey] * 3).convert("P", palette=Image.Palette.ADAPTIVE)
    return grey.convert(mode)


def _jpeg_huge_sof(rng: np.random.Generator) -> bytes:
    data = bytearray(jpeg_of(noise_images(rng, 1)[0]))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, 65500, 65500)
    return bytes(data)


def _bmp_huge_header() -> bytes:
    palette = bytes(1024)
    info_header = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 8, 0, 0, 2835, 2835,
                              256, 0)
    offset = 14 + len(info_header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + 64, 0, 0, offset) + info_header + palette + bytes(64)


def _saved(rng: np.random.Generator, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise_images(rng, 1)[0]).save(buffer, format=fmt)
    return buffer.getvalue()


def picture_variants() -> dict[str, tuple[str, PictureMake]]:
    """Broken pictures: name -> (file suffix, maker). Each is refused wherever it appears."""
    v: dict[str, tuple[str, PictureMake]] = {}
    for point in ("signature", "in-ihdr", "idat-start", "idat-mid", "idat-end"):
        v[f"png-cut-{point}"] = (".png", _noise_png_cut(point))
    v["png-empty"] = (".png", lambda r: b"")
    v["png-ihdr-bad-crc"] = (".png", lambda r: flip(noise_png(r), 30))
    v["png-width-0"] = (".png", lambda r: png_raw(0, 28, 8, 0, zlib.compress(bytes(28))))
    v["png-colour-type-5"] = (".png", lambda r: png_raw(28, 28, 8, 5, zlib.compress(bytes(812))))
    v["png-100000x100000-header"] = (
        ".png", lambda r: png_raw(100_000, 100_000, 8, 0, zlib.compress(bytes(100_001))))
    v["png-random-bytes"] = (".png", lambda r: r.bytes(900))
    v["jpeg-cut-in-half"] = (".jpg", lambda r: jpeg_of(noise_images(r, 1)[0])[:300])
    v["jpeg-random-body"] = (".jpg", lambda r: b"\xff\xd8\xff\xe0" + r.bytes(2000))
    v["jpeg-65500x65500-header"] = (".jpg", _jpeg_huge_sof)
    v["text-named-png"] = (".png", lambda r: b"hello, this is not a picture\n")
    v["gif-cut-in-half"] = (".gif", lambda r: _saved(r, "GIF")[:400])
    v["bmp-100000x100000-header"] = (".bmp", lambda r: _bmp_huge_header())
    v["tiff-cut-in-half"] = (".tif", lambda r: _saved(r, "TIFF")[:500])
    v["webp-garbage"] = (".webp", lambda r: b"RIFF" + struct.pack("<I", 2004) + b"WEBPVP8 "
                         + r.bytes(1996))
    for mode in ("L", "I;16", "P", "RGBA", "LA", "RGB", "1"):
        name = {"I;16": "16bit", "1": "1bit"}.get(mode, mode)
        v[f"{name}-9400x9400"] = (".png", _big_constant(mode))
    return v


def _big_constant(mode: str) -> PictureMake:
    """A 9400 x 9400 PNG of one colour: 88 million pixels (below Pillow's bomb limit)."""
    depth, colour = {"L": (8, 0), "I;16": (16, 0), "P": (8, 3), "RGBA": (8, 6), "LA": (8, 4),
                     "RGB": (8, 2), "1": (1, 0)}[mode]
    return lambda rng: constant_png(9400, depth, colour)


def _noise_png_cut(point: str) -> PictureMake:
    return lambda rng: _cut_png(noise_png(rng), point)


def _noise_png_sized(w: int, h: int) -> PictureMake:
    return lambda rng: noise_png(rng, h, w)


def _mode_png(mode: str) -> PictureMake:
    return lambda rng: png_of(_mode_image(rng, mode))


def tree_only_variants() -> dict[str, tuple[str, PictureMake]]:
    """Pictures that are fine alone but wrong inside a tree of 28x28 images."""
    v: dict[str, tuple[str, PictureMake]] = {}
    for w, h in ((27, 28), (1, 1)):
        v[f"size-{w}x{h}"] = (".png", _noise_png_sized(w, h))
    for mode in ("I;16", "P", "RGBA", "LA", "RGB", "1"):
        name = {"I;16": "16bit", "1": "1bit"}.get(mode, mode)
        v[f"{name}-27x28"] = (".png", _mode_png(mode))
    v["cmyk-jpeg-27x28"] = (".jpg", lambda r: jpeg_of(_mode_image(r, "CMYK")))
    v["16bit-cut-idat-mid"] = (".png", lambda r: _cut_png(png_of(_mode_image(r, "I;16", 28)),
                                                          "idat-mid"))
    v["RGBA-cut-idat-mid"] = (".png", lambda r: _cut_png(png_of(_mode_image(r, "RGBA", 28)),
                                                         "idat-mid"))
    return v


# ---------------------------------------------------------------- image trees

TREE = "tree-q"
TreeEdit = Callable[[dict[str, Entry], np.random.Generator], tuple[str, ...]]


def _tree_entries(rng: np.random.Generator, layout: str) -> dict[str, Entry]:
    """A valid tree: 10 classes, 2 train and 1 test noise PNGs each (flat: 3 per class)."""
    entries: dict[str, Entry] = {}
    if layout == "flat":
        for label in range(10):
            for i in range(3):
                entries[f"{label}/img_{i}.png"] = noise_png(rng)
        return entries
    train, test = ("training", "testing") if layout == "fastai" else ("train", "test")
    for label in range(10):
        for i in range(2):
            entries[f"{train}/{label}/train_image_{2 * label + i + 1}.png"] = noise_png(rng)
        entries[f"{test}/{label}/test_image_{label + 1}.png"] = noise_png(rng)
    return entries


def _put(rel: str, make: PictureMake, *also: str) -> TreeEdit:
    def edit(entries: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        entries[rel] = make(rng)
        return (rel.rsplit("/", 1)[-1], *also)

    return edit


def _move_class(old: str, new: str, *needles: str) -> TreeEdit:
    def edit(entries: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        for rel in [k for k in entries if k.startswith(old + "/")]:
            entries[new + rel[len(old):]] = entries.pop(rel)
        return needles

    return edit


def _remove(prefix: str, *needles: str, folder: bool = False) -> TreeEdit:
    def edit(entries: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        for rel in [k for k in entries if k.startswith(prefix)]:
            del entries[rel]
        if folder:
            entries[prefix.rstrip("/")] = Folder()
        return needles

    return edit


def _both(*edits: TreeEdit) -> TreeEdit:
    def edit(entries: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        needles: tuple[str, ...] = ()
        for one in edits:
            needles += one(entries, rng)
        return needles

    return edit


def _register_trees() -> None:
    bad = "train/3/zz-bad"
    for name, (suffix, make) in {**picture_variants(), **tree_only_variants()}.items():
        if name not in ("RGB-9400x9400", "1bit-9400x9400"):  # as L and RGBA, for a tree
            _add_tree_case(name, _put(bad + suffix, make))
    pictures = {**picture_variants(), **tree_only_variants()}
    for name in ("size-27x28", "L-9400x9400", "png-cut-idat-mid"):
        suffix, make = pictures[name]
        _add_tree_case(f"first-file-{name}", _put("train/0/a-bad" + suffix, make))
    cut = pictures["png-cut-idat-mid"][1]
    _add_tree_case("fastai-cut-png", _put("training/3/zz-bad.png", cut), layout="fastai")
    _add_tree_case("fastai-test-size-27x28",
                   _put("testing/3/zz-bad.png", pictures["size-27x28"][1]), layout="fastai")
    _add_tree_case("flat-random-bytes",
                   _put("3/zz-bad.png", pictures["png-random-bytes"][1]), layout="flat")
    _add_tree_case("flat-loose-image", _put("loose-q.png", lambda r: noise_png(r)),
                   layout="flat")
    idat_bomb = png_raw(28, 28, 8, 0, zlib_bomb(b"", BOMB_BYTES))
    _add_tree_case("png-idat-bomb", _both(
        _put("train/3/zz-bomb.png", lambda r: idat_bomb),
        _put("train/9/zz-bad.png", lambda r: b"not a picture")))
    strays = {".DS_Store": b"\0", "Thumbs.db": b"\0", "readme.txt": b"hi", "notes.md": b"#",
              "desktop.ini": b"", "labels.csv": b"a,b", "train/info.json": b"{}"}

    def add_strays(entries: dict[str, Entry], rng: np.random.Generator) -> tuple[str, ...]:
        entries.update(strays)
        return ()

    _add_tree_case("strays-and-a-cut-png", _both(add_strays, _put("train/3/zz-bad.png", cut)))
    structure: dict[str, TreeEdit] = {
        "empty-root": _remove("", TREE),
        "only-stray-files": _both(_remove(""), lambda e, r: (e.update(
            {k: v for k, v in strays.items() if "/" not in k}) or ()) + (TREE,)),
        "empty-train-folder": _remove("train/", f"{TREE}/train", folder=True),
        "empty-test-folder": _remove("test/", f"{TREE}/test", folder=True),
        "empty-class-folder": _remove("train/4/", "train/4", folder=True),
        "test-split-only": _remove("train/", TREE),
        "extra-validation-split": _put("validation/3/v.png", lambda r: noise_png(r),
                                       "validation"),
        "folder-inside-class": _put("train/3/deep-q/x.png", lambda r: noise_png(r), "deep-q"),
        "image-loose-in-split": _put("train/loose-q.png", lambda r: noise_png(r)),
        "text-file-in-class": _put("train/3/notes-q.txt", lambda r: b"some notes\n"),
        "npy-file-in-class": _put("train/3/arr-q.npy", lambda r: npy_of(noise_images(r, 1))),
        "class-cat": _move_class("train/3", "train/cat", "train/cat"),
        "class-minus-1": _move_class("train/3", "train/-1", "train/-1"),
        "class-arabic-3": _move_class("train/3", "train/\u0663", "train/\u0663"),
        "class-999999999": _move_class("train/3", "train/999999999", "999999999"),
        "class-200-digits": _move_class("train/3", "train/" + "7" * 200, "7" * 200),
        "class-00-beside-0": _put("train/00/x.png", lambda r: noise_png(r), "00"),
        "class-newline": _move_class("train/3", "train/3\nzq7", "zq7"),
        "train-and-training": _put("training/3/t.png", lambda r: noise_png(r), "training"),
        "class-symlink-to-dev": _both(_remove("train/5/"),
                                      lambda e, r: (e.update({"train/5": Link("/dev")}) or ())
                                      + ("train/5",)),
        "symlink-dev-zero": _put("train/3/zero-q.png", lambda r: Link("/dev/zero")),
        "symlink-dangling": _put("train/3/gone-q.png", lambda r: Link("no-such-file-q")),
        "symlink-loop": _put("train/3/loop-q.png", lambda r: Link("loop-q.png")),
        "fifo-named-png": _put("train/3/pipe-q.png", lambda r: Fifo()),
        "folder-named-png": _put("train/3/dir-q.png", lambda r: Folder()),
        "name-newline": _put("train/3/evil\nzq8.png", cut, "zq8.png"),
        "name-spaces": _put("train/3/my digit zq9.png", cut, "zq9.png"),
        "name-escape-sequence": _put("train/3/\x1b[31mzq10.png", cut, "zq10.png"),
        "name-not-utf8": _put(os.fsdecode(b"train/3/zq11\xff.png"), cut, "zq11"),
        "name-255-bytes": _put("train/3/" + "z" * 251 + ".png", cut),
        # Rich turns :smile: into an emoji unless told not to: the name must come out as it is.
        "name-emoji-code": _put("train/3/:smile:zq16.png", cut),
        # Warnings name files too: a stray name with a newline must not break their one line.
        "stray-name-newline": _both(lambda e, r: (e.update({"read\nme-zq17.txt": b"hi"}) or ()),
                                    _put("train/3/zz-bad.png", cut)),
    }
    for name, edit in structure.items():
        _add_tree_case(name, edit)


def _add_tree_case(name: str, edit: TreeEdit, layout: str = "kaggle") -> None:
    full = "tree-" + name

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        entries = _tree_entries(rng, layout)
        needles = tuple(n for n in edit(entries, rng) if is_plain(n))
        root = case_dir / TREE
        root.mkdir()
        return Setup(info(root), needles, fifos=materialise(root, entries))

    _add(full, build)


# ---------------------------------------------------------------- model files

MODEL = "model-q.safetensors"


@functools.lru_cache(maxsize=1)
def _model_json() -> tuple[str, dict[str, bytes], dict[str, tuple[str, tuple[int, ...]]]]:
    """A fitted template model, kept as JSON info and raw tensors (callers get copies)."""
    from digitlab.io import save_model
    from digitlab.models import Template

    rng = np.random.default_rng(12)
    features = noise_images(rng, 30).reshape(30, -1).astype(np.float32) / np.float32(255)
    model = Template().fit(features, digit_labels(30))
    with tempfile.TemporaryDirectory() as folder:
        saved = save_model(Path(folder, "m.safetensors"), model, input_shape=(28, 28),
                           class_names=[str(i) for i in range(10)], extra={"task": "all"})
    state = {k: np.array(v, order="C") for k, v in model.state_dict().items()}
    return (json.dumps(saved.__dict__), {k: v.tobytes() for k, v in state.items()},
            {k: (v.dtype.str, v.shape) for k, v in state.items()})


def model_parts() -> tuple[dict[str, object], dict[str, np.ndarray]]:
    text, raw, meta = _model_json()
    state = {k: np.frombuffer(raw[k], dtype=meta[k][0]).reshape(meta[k][1]).copy() for k in raw}
    return json.loads(text), state


def model_bytes(info: object | None = None, state: dict[str, np.ndarray] | None = None,
                metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file; with a digitlab checksum that matches unless ``metadata`` is given."""
    from safetensors.numpy import save

    from digitlab.io import metadata_entry

    base_info, base_state = model_parts()
    info = base_info if info is None else info
    state = base_state if state is None else state
    if metadata is None:
        metadata = metadata_entry(info, state)
    return save(state, metadata=metadata)


def _with_info(**changes: object) -> bytes:
    info, state = model_parts()
    return model_bytes({**info, **changes}, state)


def _with_state(**changes: np.ndarray | None) -> bytes:
    info, state = model_parts()
    merged = {k: v for k, v in {**state, **changes}.items() if v is not None}
    return model_bytes(info, merged)


def _stale_checksum() -> bytes:
    info, state = model_parts()
    entry = json.loads(model_bytes_metadata(info, state))
    entry["info"]["kind"] = "majority"
    return model_bytes(info, state, {"digitlab": json.dumps(entry)})


def model_bytes_metadata(info: dict[str, object], state: dict[str, np.ndarray]) -> str:
    from digitlab.io import metadata_entry

    return metadata_entry(info, state)["digitlab"]


def _safetensors_raw(header: dict[str, object], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def model_variants() -> dict[str, Callable[[np.random.Generator], Entry]]:
    def cut(at: str) -> Callable[[np.random.Generator], bytes]:
        def make(r: np.random.Generator) -> bytes:
            data = model_bytes()
            (length,) = struct.unpack_from("<Q", data)
            return data[: {"8": 8, "mid-header": 8 + length // 2, "last-byte": len(data) - 1}[at]]
        return make

    info, _ = model_parts()
    return {
        "random-bytes": lambda r: r.bytes(2000),
        "empty": lambda r: b"",
        "cut-at-8": cut("8"),
        "cut-mid-header": cut("mid-header"),
        "cut-last-byte": cut("last-byte"),
        "header-length-2e63": lambda r: struct.pack("<Q", 1 << 63) + model_bytes()[8:],
        "header-not-json": lambda r: struct.pack("<Q", 5) + b"{nope" + bytes(8),
        "no-metadata": lambda r: model_bytes(metadata={}),
        "digitlab-entry-not-json": lambda r: model_bytes(metadata={"digitlab": "{oops"}),
        "digitlab-entry-no-checksum": lambda r: model_bytes(
            metadata={"digitlab": json.dumps({"info": info})}),
        "flipped-tensor-byte": lambda r: flip(model_bytes(), len(model_bytes()) - 1),
        "stale-checksum": lambda r: _stale_checksum(),
        "input-shape-empty": lambda r: _with_info(input_shape=[]),
        "input-shape-2e31": lambda r: _with_info(input_shape=[2**31, 2**31]),
        "input-shape-text": lambda r: _with_info(input_shape=["a", "b"]),
        "input-shape-3d": lambda r: _with_info(input_shape=[28, 28, 3]),
        "classes-empty": lambda r: _with_info(classes=[]),
        "kind-cnn": lambda r: _with_info(kind="cnn"),
        "format-version-99": lambda r: _with_info(format_version=99),
        "settings-unknown": lambda r: _with_info(settings={"bogus": 1}),
        "settings-bad-metric": lambda r: _with_info(settings={"metric": "cosine"}),
        "info-not-a-dict": lambda r: model_bytes([1, 2]),
        "tensor-wrong-shape": lambda r: _with_state(templates_=np.zeros((3, 5), np.float32)),
        "tensor-missing": lambda r: _with_state(templates_=None),
        "tensor-offsets-past-end": lambda r: _safetensors_raw(
            {"t": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]}}, bytes(8)),
        "tensor-1tib": lambda r: _safetensors_raw(
            {"t": {"dtype": "F32", "shape": [1 << 20, 1 << 18], "data_offsets": [0, 1 << 40]}},
            bytes(16)),
        "symlink-dev-zero": lambda r: Link("/dev/zero"),
        "folder": lambda r: Folder(),
    }


def _model_argv(command_name: str, model: Path, case_dir: Path) -> list[str]:
    tiny, digit = case_dir / "tiny.npz", case_dir / "digit.png"
    return {
        "predict": ["predict", str(model), str(digit)],
        "evaluate": ["evaluate", str(model), "--data", str(tiny)],
        "inspect": ["inspect", str(model), "--data", str(tiny), "--out",
                    str(case_dir / "inspect-out")],
        # --port -1: should a bad model load after all, listening fails instead of serving forever
        "serve": ["serve", str(model), "--port", "-1"],
        "export": ["export", str(model), "--onnx", str(case_dir / "export-out.onnx")],
    }[command_name]


def _add_model_case(name: str, command_name: str, make: Callable[[np.random.Generator], Entry],
                    filename: str = MODEL, needle: str | None = None) -> None:
    full = f"model-{command_name}-{name}"

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        fifos = materialise(case_dir, {
            filename: make(rng), "tiny.npz": tiny_npz(rng), "digit.png": png_of(digit_picture(rng)),
        })
        return Setup(_model_argv(command_name, case_dir / filename, case_dir),
                     (needle or filename,), fifos=fifos)

    _add(full, build)


def _register_models() -> None:
    variants = model_variants()
    for name, make in variants.items():
        _add_model_case(name, "predict", make)
    _add_model_case("name-newline", "predict", lambda r: r.bytes(300),
                    "model\nzq12.safetensors", "zq12.safetensors")
    # The other commands load models the same way: a few cases each show they answer alike.
    for command_name, names in (
        ("evaluate", ("flipped-tensor-byte", "input-shape-empty", "symlink-dev-zero")),
        ("inspect", ("random-bytes", "tensor-wrong-shape", "symlink-dev-zero")),
        ("serve", ("random-bytes", "no-metadata", "tensor-wrong-shape")),
        ("export", ("random-bytes", "tensor-wrong-shape", "symlink-dev-zero")),
    ):
        for name in names:
            _add_model_case(name, command_name, variants[name])


# ---------------------------------------------------------------- predict: user pictures


def _add_predict_case(name: str, pictures: dict[str, PictureMake], args: list[str],
                      needles: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    full = "predict-" + name

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        entries: dict[str, Entry] = {MODEL: model_bytes()}
        entries.update({rel: make(rng) for rel, make in pictures.items()})
        fifos = materialise(case_dir, entries)
        argv = ["predict", str(case_dir / MODEL), *[str(case_dir / a) for a in args], *extra]
        return Setup(argv, needles, fifos=fifos)

    _add(full, build)


def _register_predict() -> None:
    skipped = ("png-cut-signature", "png-cut-idat-start", "png-cut-idat-end", "png-width-0",
               "png-colour-type-5", "jpeg-random-body")  # the same decoder path as others
    for name, (suffix, make) in picture_variants().items():
        if name in skipped:
            continue
        _add_predict_case(name, {"photo-q" + suffix: make}, ["photo-q" + suffix],
                          ("photo-q" + suffix,))
    good: PictureMake = lambda r: png_of(digit_picture(r))  # noqa: E731
    cut = picture_variants()["png-cut-idat-mid"][1]
    _add_predict_case("png-idat-bomb", {"photo-q.png": lambda r: png_raw(
        28, 28, 8, 0, zlib_bomb(b"", BOMB_BYTES))}, ["photo-q.png"], ("photo-q.png",))
    _add_predict_case("symlink-dev-zero", {"zero-q.png": lambda r: Link("/dev/zero")},
                      ["zero-q.png"], ("zero-q.png",))
    _add_predict_case("fifo", {"pipe-q.png": lambda r: Fifo()}, ["pipe-q.png"], ("pipe-q.png",))
    _add_predict_case("empty-folder", {"pics-q": lambda r: Folder()}, ["pics-q"], ("pics-q",))
    _add_predict_case("folder-with-a-cut-png", {"pics/a.png": good, "pics/zz-bad.png": cut},
                      ["pics"], ("zz-bad.png",))
    _add_predict_case("missing-file", {}, ["missing-q.png"], ("missing-q.png",))
    _add_predict_case("name-newline", {"evil\nzq13.png": cut}, ["evil\nzq13.png"], ("zq13.png",))
    _add_predict_case("blank-white", {"blank-q.png": lambda r: png_of(
        np.full((28, 28), 255, np.uint8))}, ["blank-q.png"], ("blank-q.png",))
    _add_predict_case("raw-wrong-size", {"small-q.png": lambda r: png_of(digit_picture(r, 20, 20))},
                      ["small-q.png"], ("small-q.png",), ("--raw",))


# ---------------------------------------------------------------- outputs


def _output_argv(command_name: str, out: Path, case_dir: Path) -> list[str]:
    tiny = str(case_dir / "tiny.npz")
    if command_name == "train":
        return ["train", "--data", tiny, "--model", "majority", "--quiet", "--out", str(out)]
    if command_name == "inspect":
        return ["inspect", str(case_dir / MODEL), "--data", tiny, "--out", str(out)]
    if command_name == "export":
        return ["export", str(case_dir / MODEL), "--onnx", str(out)]
    fmt = command_name.removeprefix("convert-")
    return ["data", "convert", tiny, str(out), "--format", fmt]


OUTPUT_COMMANDS = ("train", "inspect", "convert-png", "convert-idx", "convert-npz")


def _add_output_case(name: str, command_name: str,
                     place: Callable[[Path], tuple[Path, tuple[str, ...]]],
                     *, fsize: int | None = None, non_root: bool = False) -> None:
    full = f"out-{command_name}-{name}"
    suffix = ".npz" if command_name == "convert-npz" else ""

    def build(case_dir: Path) -> Setup:
        rng = rng_for(full)
        materialise(case_dir, {"tiny.npz": tiny_npz(rng), MODEL: model_bytes()})
        out, needles = place(case_dir)
        out = out.with_name(out.name + suffix)
        locked = tuple(p for p in case_dir.iterdir() if p.name == "locked")
        return Setup(_output_argv(command_name, out, case_dir),
                     tuple(n + suffix if n == "out-q" else n for n in needles), fsize=fsize,
                     needs_non_root=non_root, chmod_back=locked)

    _add(full, build)


def _under_proc(case_dir: Path) -> tuple[Path, tuple[str, ...]]:
    # The folder that cannot be made may be named instead of the destination itself.
    return Path("/proc/digitlab-hostile/out-q"), ("out-q", "digitlab-hostile")


def _under_file(case_dir: Path) -> tuple[Path, tuple[str, ...]]:
    write(case_dir / "afile.txt", b"a user's file\n")
    return case_dir / "afile.txt" / "out-q", ("out-q", "afile.txt")


def _non_empty(case_dir: Path) -> tuple[Path, tuple[str, ...]]:
    write(case_dir / "out-q" / "keep.txt", b"the user's own file\n")
    write(case_dir / "out-q.npz", b"the user's own file\n")
    return case_dir / "out-q", ("out-q",)


def _unwritable(case_dir: Path) -> tuple[Path, tuple[str, ...]]:
    locked = case_dir / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "out-q", ("out-q", "locked")


def _fresh(case_dir: Path) -> tuple[Path, tuple[str, ...]]:
    return case_dir / "out-q", ("out-q",)


def _register_outputs() -> None:
    for command_name in OUTPUT_COMMANDS:
        _add_output_case("under-proc", command_name, _under_proc)
        if command_name in ("train", "inspect"):  # convert: see under-dev-null
            _add_output_case("under-a-file", command_name, _under_file)
        # convert-idx makes the same check as convert-png; train and inspect write into an
        # existing folder on purpose, keeping the user's files (tests/test_cli_errors.py).
        if command_name in ("convert-png", "convert-npz"):
            _add_output_case("non-empty", command_name, _non_empty)
        _add_output_case("unwritable-folder", command_name, _unwritable, non_root=True)
    for command_name in ("convert-png", "convert-idx", "convert-npz"):
        _add_output_case("under-dev-null", command_name,
                         lambda d: (Path("/dev/null/out-q"), ("out-q", "/dev/null")))
        _add_output_case("disk-full-512", command_name, _fresh, fsize=512)
    # Sizes chosen so the write that fails differs: the model file (about 1 KB), the
    # figures (16 to 140 KB each) or the report (about 400 KB); inspect has no model file.
    for size in (512, 20_000, 200_000):
        _add_output_case(f"disk-full-{size}", "train", _fresh, fsize=size)
        _add_output_case(f"disk-full-{size}", "inspect", _fresh, fsize=size)
    _add_output_case("name-newline-disk-full", "train",
                     lambda d: (d / "new\nzq15-run", ("zq15-run",)), fsize=512)
    # export: one file, checked before the model is read (the ONNX file of a model is ~1 KB).
    for name, place in (("under-proc", _under_proc), ("under-a-file", _under_file)):
        _add_output_case(name, "export", place)
    _add_output_case("disk-full-512", "export", _fresh, fsize=512)
    _add_output_case("dest-is-the-source", "convert-idx",
                     lambda d: (d / "tiny.npz", ("tiny.npz",)))


# ---------------------------------------------------------------- controls
#
# The unbroken material of each family, which must load (exit 0) under the same
# limits: a case then fails because of what it broke, not because of its base.

CONTROLS: dict[str, Callable[[Path], Setup]] = {}


def _control(name: str) -> Callable[[Callable[[Path], Setup]], Callable[[Path], Setup]]:
    def register(build: Callable[[Path], Setup]) -> Callable[[Path], Setup]:
        CONTROLS[name] = build
        return build

    return register


def control_names() -> list[str]:
    return list(CONTROLS)


def get_control(name: str) -> Callable[[Path], Setup]:
    return CONTROLS[name]


def _file_control(name: str, filename: str, make: Callable[[np.random.Generator], bytes]) -> None:
    def build(case_dir: Path) -> Setup:
        write(case_dir / filename, make(rng_for("control-" + name)))
        return Setup(info(case_dir / filename), (filename,))

    CONTROLS[name] = build


def _register_controls() -> None:
    _file_control("npz", NPZ, lambda r: npz_of(**_npz_arrays(r)))
    _file_control("csv", CSV, lambda r: _text(_csv_lines(r)))
    _file_control("csv-gz", CSV + ".gz", lambda r: gzip.compress(_text(_csv_lines(r))))
    _file_control("mat", MAT, lambda r: mat_of(_mat_vars(r)))
    _file_control("mat-compressed", MAT, lambda r: mat_of(_mat_vars(r), compress=True))

    @_control("idx")
    def idx(case_dir: Path) -> Setup:
        root = case_dir / IDX_FOLDER
        root.mkdir()
        materialise(root, _idx_files(rng_for("control-idx")))
        return Setup(info(root), (IDX_FOLDER,))

    def tree(name: str, layout: str,
             extra: Callable[[np.random.Generator], dict[str, Entry]] = lambda r: {}) -> None:
        def build(case_dir: Path) -> Setup:
            rng = rng_for("control-" + name)
            materialise(case_dir / TREE, {**_tree_entries(rng, layout), **extra(rng)})
            return Setup(info(case_dir / TREE), (TREE,))

        CONTROLS[name] = build

    tree("tree-kaggle", "kaggle")
    tree("tree-fastai", "fastai")
    tree("tree-flat", "flat")

    def modes(r: np.random.Generator) -> dict[str, Entry]:
        # Every colour mode, at the tree's 28x28, and stray files: all accepted
        # (the strays with one warning line), so the mode cases fail only by their size.
        entries: dict[str, Entry] = {
            f"train/{i}/mode.png": png_of(_mode_image(r, m, 28))
            for i, m in enumerate(("I;16", "P", "RGBA", "LA", "RGB", "1"))}
        entries["train/7/cmyk.jpg"] = jpeg_of(_mode_image(r, "CMYK", 28))
        entries.update({".DS_Store": b"\0", "readme.txt": b"hi"})
        return entries

    tree("tree-every-mode-and-strays", "kaggle", modes)

    def with_model(command_name: str) -> None:
        def build(case_dir: Path) -> Setup:
            rng = rng_for("control-" + command_name)
            materialise(case_dir, {MODEL: model_bytes(), "tiny.npz": tiny_npz(rng),
                                   "digit.png": png_of(digit_picture(rng))})
            return Setup(_model_argv(command_name, case_dir / MODEL, case_dir), (MODEL,))

        CONTROLS["model-" + command_name] = build

    with_model("predict")
    with_model("evaluate")
    with_model("inspect")
    with_model("export")

    def output(command_name: str) -> None:
        def build(case_dir: Path) -> Setup:
            rng = rng_for("control-out-" + command_name)
            materialise(case_dir, {"tiny.npz": tiny_npz(rng), MODEL: model_bytes()})
            out = case_dir / ("out-q.npz" if command_name == "convert-npz" else "out-q")
            return Setup(_output_argv(command_name, out, case_dir), (out.name,))

        CONTROLS["out-" + command_name] = build

    for command_name in (*OUTPUT_COMMANDS, "export"):
        output(command_name)


def _register_all() -> None:
    _register_idx()
    _register_npz()
    _register_csv()
    _register_mat()
    _register_trees()
    _register_predict()
    _register_models()
    _register_outputs()
    _register_controls()


_register_all()


# ---------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run digitlab's hostile-input cases.")
    parser.add_argument("patterns", nargs="*", help="run only cases whose name holds one")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--list", action="store_true", help="list the case names and stop")
    parser.add_argument("--verbose", action="store_true", help="show stderr of failing cases")
    args = parser.parse_args(argv)
    chosen = [c for c in CASES if not args.patterns or any(p in c.name for p in args.patterns)]
    out = sys.stdout
    if args.list:
        out.write("\n".join(c.name for c in chosen) + "\n")
        return 0

    def one(case: Case) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
            try:
                return run_case(case, Path(folder))
            except Exception as exc:  # a broken case is reported, not fatal to the table
                return Outcome(case.name, "fail", [f"case could not run: {exc!r}"])
            finally:
                _make_removable(Path(folder))

    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(one, chosen))
    width = max((len(o.name) for o in outcomes), default=4)
    for o in outcomes:
        out.write(f"{o.name:<{width}}  {o.status:<4}  {o.seconds:5.1f}s  {o.reason}\n")
        if args.verbose and o.status == "fail":
            out.write("    " + o.stderr.strip().replace("\n", "\n    ")[-1500:] + "\n")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pass", "fail", "skip")}
    out.write(f"\n{len(outcomes)} cases: {counts['pass']} pass, {counts['fail']} fail, "
              f"{counts['skip']} skip ({time.perf_counter() - started:.0f} s)\n")
    return 0 if counts["fail"] == 0 else 1


def _make_removable(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(0o755)


if __name__ == "__main__":
    sys.exit(main())

