"""Reading users' files safely: regular files only, and never more than a file promises.

Every reader of users' files in :mod:`digitlab.data` (and ``digitlab
predict``'s pictures) opens them through this module, so the rules below hold
for all of them. (The tree cache and downloads are digitlab's own files.)

- Only regular files are read. A path may name a named pipe (reading it
  waits for a writer forever), a device (a ``digit.png`` symlinked to
  ``/dev/zero`` never ends) or a folder. The check is made on the open
  descriptor (``fstat`` after symlinks are followed), so the path cannot be
  swapped between check and read, and the open itself does not block on a
  pipe (``O_NONBLOCK``).
- A read takes at most the size the file had when opened (plus one byte, to
  notice a file that grows while it is read).
- Decompressed data is read up to a limit, never to its end first and
  measured later: 1 MB of gzip can unpack to 1 GB.
- No reader builds more than :data:`MAX_DATA_BYTES` from one file (or one
  image tree), and sizes promised by headers are checked against it before
  anything is allocated. An allocation the machine cannot make is a
  :class:`~digitlab.errors.DataError`, not a ``MemoryError`` traceback.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib

import numpy as np

from digitlab.errors import DataError

MAX_DATA_BYTES = 1 << 30
"""The most one reader builds from one file or image tree: 1 GiB (also of CSV text).

Twenty times MNIST's 47 MB of training images; EMNIST ByClass (547 MB) fits.
A dataset that size becomes 4 GiB of float32 features, more than a laptop
trains on, so the limit refuses nothing digitlab could use, and refuses
before allocating what a damaged or hostile header claims.
"""

GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot compress better than 1032:1 (a 258-byte match in at most two
# bits), so a gzip file of c bytes never unpacks to more than 1032 * c bytes.
DEFLATE_MAX_RATIO = 1032
# Decompressed data is read in blocks of this size: large enough to be fast,
# small enough that a block past the limit costs nothing.
_BLOCK = 1 << 20

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def open_fd(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Open a regular file for reading: its descriptor (the caller closes it) and size.

    Raises
    ------
    DataError
        The file cannot be opened, or is not a regular file (after symlinks).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise DataError(path, f"is {kind}, not a regular file; refusing to read it")
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
        raise
    return fd, info.st_size


def check_size(path: str | os.PathLike[str], size: int, limit: int | None, what: str) -> None:
    """Refuse ``size`` bytes of ``what`` when they exceed ``limit`` (None: no limit)."""
    if limit is not None and size > limit:
        raise DataError(
            path, f"{what} would take {size:,} bytes, more than the {limit:,} digitlab reads"
        )


def read_file(path: str | os.PathLike[str], *, limit: int | None = MAX_DATA_BYTES) -> bytes:
    """The whole of a regular file, through a descriptor closed at once.

    Plain ``os.read`` calls: a third cheaper than ``open().read()``, which
    matters when a big image tree spends a tenth of its time here. A file
    larger than ``limit`` bytes is refused unread.
    """
    fd, size = open_fd(path)
    try:
        if limit is not None and size > limit:  # inline test: trees call this per file
            check_size(path, size, limit, "the file")
        # Normally one call: a regular file gives all it holds up to the size asked.
        data = os.read(fd, size + 1)
        if 0 < len(data) < size:  # a short read (a signal, over 2 GB): go on to the end
            parts, got = [data], len(data)
            while got <= size and (block := os.read(fd, size + 1 - got)):
                parts.append(block)
                got += len(block)
            data = b"".join(parts)
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > size:
        raise _grew(path)
    return data


def _grew(path: str | os.PathLike[str]) -> DataError:
    return DataError(path, "the file grew while it was read; read it again when it is complete")


def open_binary(path: str | os.PathLike[str]) -> tuple[io.BufferedReader, int]:
    """A buffered binary handle on a regular file (the caller closes it), and its size."""
    fd, size = open_fd(path)
    return os.fdopen(fd, "rb"), size


class BoundedStream:
    """A regular file's bytes, gunzipped when it starts with the gzip magic number; at most
    ``limit`` of them. A context manager: leaving it closes the file.

    For reading a large file a block at a time: nothing is held here between
    reads, so gzip data that unpacks without end (a decompression bomb) costs
    one block of memory and is stopped one block past the limit. A file
    larger than ``limit`` is refused unread; as :func:`read_file`, a plain
    file is read no further than its size when opened, plus one byte.
    """

    def __init__(self, path: str | os.PathLike[str], *, limit: int = MAX_DATA_BYTES) -> None:
        self.path, self.limit, self.total = path, limit, 0
        self.handle, self.length = open_binary(path)
        try:
            check_size(path, self.length, limit, "the file")
            gzipped = self.handle.peek(2)[:2] == GZIP_MAGIC
        except BaseException as exc:
            self.handle.close()
            if isinstance(exc, OSError):
                raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
            raise
        self.gzip = gzip.GzipFile(fileobj=self.handle, mode="rb") if gzipped else None

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer at the end; ``b""`` past it)."""
        try:
            if self.gzip is None:
                block = self.handle.read(min(size, self.length + 1 - self.total))
            else:
                block = self.gzip.read(size)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(self.path, f"corrupt or truncated gzip data ({exc})") from None
        except OSError as exc:
            raise DataError(self.path, f"cannot read: {exc.strerror or exc}") from None
        self.total += len(block)
        if self.gzip is None and self.total > self.length:
            raise _grew(self.path)
        if self.total > self.limit:
            raise DataError(
                self.path,
                f"gzip data unpacks to more than {self.limit:,} bytes, the most digitlab reads "
                "(a decompression bomb?)",
            )
        return block

    def __enter__(self) -> BoundedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.gzip is not None:
            self.gzip.close()  # does not close the handle it was given
        self.handle.close()


def read_into(stream: io.BufferedIOBase, buffer: memoryview) -> int:
    """Fill ``buffer`` (bytes) from ``stream``; the count read, short only at the end of the stream.

    In blocks: a decompressing stream's ``readinto`` would otherwise build a
    temporary as large as the whole buffer.
    """
    done, size = 0, len(buffer)
    while done < size:
        got = stream.readinto(buffer[done : min(size, done + _BLOCK)])
        if not got:
            break
        done += got
    return done


def empty_array(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype, what: str
) -> np.ndarray:
    """``np.empty(shape, dtype)``, or a DataError naming ``path`` when memory runs out."""
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as exc:  # ValueError: a shape numpy cannot even describe
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        raise DataError(
            path, f"{what} needs {nbytes:,} bytes of memory, more than is available ({exc})"
        ) from None
