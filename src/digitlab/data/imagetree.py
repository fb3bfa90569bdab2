"""Image folder trees <-> :data:`~digitlab.data.formats.Splits`.

Layouts read (labels come from class-folder names, which must be
non-negative integers):

- Kaggle "MNIST as PNG": ``root/train/0/train_image_1.png``, ``root/test/...``;
- fastai: ``root/training/0/...``, ``root/testing/...``;
- only a train (or training) split: returns only ``"train"``;
- class folders directly under ``root`` (``root/0/...``): returns only
  ``"train"``; the Dataset layer holds out a test split.

Images are ordered by label, then by natural file-name order
(``train_image_2`` before ``train_image_10``), so every load of a tree gives
the same arrays. Known stray files (``.DS_Store``, ``Thumbs.db``,
``desktop.ini``, hidden dot-files and ``__MACOSX`` folders) and non-image
files outside class folders are skipped with one
:class:`~digitlab.errors.DataWarning`; any other non-image file inside a
class folder is an error. Image suffixes (any case): .png .jpg .jpeg .bmp
.gif .tif .tiff .webp.

Conversion rule (every image becomes uint8 ``(h, w)``, one rule for all):

- ``L`` (8-bit grey) is kept as it is;
- ``1`` (1-bit) becomes 0 / 255;
- ``I;16`` (16-bit) and ``I`` (32-bit integer, which older Pillow uses for
  16-bit PNGs) are clipped to 0..65535 and scaled to 8 bits as
  ``round(v / 257)``, so 65535 -> 255;
- ``F`` (float) follows :func:`~digitlab.data.formats.as_uint8_images`:
  0..1 when its maximum is at most 1, else 0..255;
- ``P`` (palette) is expanded to RGBA first, so a transparent palette entry
  counts as transparent;
- ``LA`` / ``PA`` / ``RGBA`` are composited onto black (transparent =
  background = 0), then reduced to luminance;
- ``RGB`` (and any other colour mode, through RGB) becomes luminance by
  ITU-R 601-2, exactly as Pillow's ``convert("L")``:
  ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``.

Multi-frame files (GIF, TIFF) give their first frame. Nothing is inverted:
a tree of black-on-white images stays black-on-white (see
:mod:`digitlab.data.preprocess` for that).

Limits, so that no tree can claim more memory than it holds images for:
image files are read only when they are regular files of at most
:data:`MAX_FILE_BYTES`; an image's size is read from its header before it
is decoded, and one of another size than the tree's first image, or of more
than :data:`MAX_PIXELS`, is refused undecoded; a tree's decoded images may
take at most :data:`~digitlab.data.files.MAX_DATA_BYTES` in all.

Speed: each file is read whole into memory (no handle stays open) and
decoded from there. Plain 8-bit grey PNGs (MNIST as PNG) skip Pillow: zlib
inflates each file and numpy undoes the PNG row filters for a whole batch at
once; every other file goes through Pillow. Big trees are decoded in forked
worker processes, in a few large chunks, each sending back one array rather
than one pickle per image. The decoded arrays are cached
(:mod:`digitlab.data.cache`) with the listing they were decoded from (every
file's path, size and mtime), and a reload uses them only when the walk
that lists the tree finds that same listing. That walk stats every file, so a
cached reload of a big tree is mostly stat calls: they are shared with one
forked process, and the cache entry is read while they run.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import math
import mmap
import multiprocessing
import os
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitlab.atomic import atomic_dir
from digitlab.data import cache as tree_cache
from digitlab.data import files
from digitlab.data.formats import LABEL_RULE, MAX_LABEL, Splits, as_uint8_images, check_pair
from digitlab.drawing import can_fork
from digitlab.engines import FORK_WARNING, usable_cores
from digitlab.errors import DataError, DataWarning

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Folder name (lower case) -> split it holds.
SPLIT_FOLDERS = {"train": "train", "training": "train", "test": "test", "testing": "test"}
STRAY_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"})

# Below this many files, starting worker processes costs more than it saves:
# measured, the PNG fast path decodes 10,000 digits in about half a second on
# one core, and forking workers and shipping chunks back costs 0.1-0.2 s.
PARALLEL_MIN_FILES = 10_000
# Chunks per worker: enough to even out the workers, few enough that the
# per-chunk costs (a pickle, the PNG unfiltering loop) stay negligible.
CHUNKS_PER_WORKER = 4
# Linux forks its workers: a forked child starts at once, while a spawned or
# forkserver child must import digitlab again (seconds) and re-runs the
# caller's script unless it has an ``if __name__ == "__main__":`` guard. The
# children only decode or encode images with Pillow and numpy, touching no
# lock another thread could hold. macOS and Windows spawn (fork is unsafe there).
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"

# A matching hint lets Pillow skip probing every format plugin in turn.
_FORMAT_HINTS = {
    ".png": ("PNG",),
    ".jpg": ("JPEG",),
    ".jpeg": ("JPEG",),
    ".bmp": ("BMP",),
    ".gif": ("GIF",),
    ".tif": ("TIFF",),
    ".tiff": ("TIFF",),
    ".webp": ("WEBP",),
}
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})

MAX_PIXELS = 4096 * 4096
"""The largest image decoded (width x height), in a tree or a user's picture.

Checked from the header, before any pixel is decoded. Pillow's own limit
(89 megapixels) lets one small PNG claim a 9,400 x 9,400 RGBA image, which
takes 1.9 GB on its way to grey; at this limit the worst case stays near
256 MB, and a digit needs a tiny fraction of it."""
MAX_FILE_BYTES = 256 << 20
"""The largest image file read: 256 MiB, far above any image of :data:`MAX_PIXELS`
pixels stored sensibly (16-bit RGBA uncompressed takes 134 MB)."""
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: folder labels and numbers in file names
_NUMBER_WIDTH = 40  # digits: numbers in file names are far shorter

# Writers: format name -> (Pillow format, suffix, save options).
WRITE_FORMATS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "png": ("PNG", ".png", {}),
    "bmp": ("BMP", ".bmp", {}),
    "tiff": ("TIFF", ".tif", {}),
    "webp": ("WEBP", ".webp", {"lossless": True}),
    "jpeg": ("JPEG", ".jpg", {"quality": 95}),  # lossy: pixels change slightly
}


# ---------------------------------------------------------------- decoding


def decode_image(data: bytes, source: str | Path) -> np.ndarray:
    """Decode one image file held in memory to uint8 grey by the module's rule.

    Parameters
    ----------
    data : bytes
        The whole file (PNG, JPEG, BMP, GIF, TIFF, WebP, ...).
    source : str or Path
        Where the bytes came from: named in errors; its suffix picks the
        decoder to try first.

    Returns
    -------
    image : ndarray of shape (h, w), uint8

    Raises
    ------
    DataError
        Truncated or corrupt data, a decompression bomb, or a mode with no
        conversion to grey.
    """
    return np.array(_decode_grey(data, source), dtype=np.uint8)


def _decode_grey(
    data: bytes, source: str | Path, *, size: tuple[int, int] | None = None, first: str = ""
) -> Image.Image:
    """Decode ``data`` with Pillow and the conversion rule to a mode-"L" image.

    ``size``: the ``(width, height)`` the image must have (that of ``first``,
    the tree's first image). Sizes come from the header, so an image of
    another size, or too many pixels, is refused before it is decoded.
    """
    try:
        # os.path, not pathlib: building a Path costs more than this whole line.
        image = _open(data, os.path.splitext(source)[1].lower())  # noqa: PTH122
        if size is not None and image.size != size:
            (w, h), (gw, gh) = size, image.size
            raise DataError(source, f"image is {gw}x{gh} pixels but {first} is {w}x{h}; all must "
                            "match, unless each digit is normalised as predict does (--normalise)")
        _refuse_bomb(image, source)
        image.load()
        return _to_grey(image, source)
    except DataError:
        raise  # already says what is wrong (DataError is also a ValueError)
    except UnidentifiedImageError:
        damage = damaged_header(data)
        if damage is not None:
            raise DataError(source, damage) from None
        what = "the file is empty" if not data else "no image format recognised"
        raise DataError(source, f"truncated or corrupt image ({what})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            source, f"image is too large, refusing a possible decompression bomb ({exc})"
        ) from None
    except _DECODE_ERRORS as exc:
        raise DataError(source, f"truncated or corrupt image ({exc})") from None


def _open(data: bytes, suffix: str) -> Image.Image:
    hint = _FORMAT_HINTS.get(suffix)
    try:
        return Image.open(io.BytesIO(data), formats=hint)
    except UnidentifiedImageError:
        if hint is None:
            raise
    # The suffix lied (a JPEG saved as .png): let Pillow probe every format.
    return Image.open(io.BytesIO(data))


def _refuse_bomb(image: Image.Image, source: str | Path) -> None:
    # Pillow only warns between its MAX_IMAGE_PIXELS and twice that; refuse those too,
    # and anything above our own, tighter limit.
    limits = [limit for limit in (Image.MAX_IMAGE_PIXELS, MAX_PIXELS) if limit is not None]
    if image.width * image.height > min(limits):
        raise DataError(
            source,
            f"image is too large ({image.width}x{image.height} pixels, more than "
            f"{min(limits):,}), refusing a possible decompression bomb",
        )


# Magic numbers of the formats Pillow reads here, to say which one a file
# that Pillow could not open claims to be.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
)


def damaged_header(data: bytes, formats: Sequence[str] | None = None) -> str | None:
    """What is wrong with an image file Pillow could not identify, when it claims a format.

    Pillow reports any damage in a header as "cannot identify image file";
    when the file starts with a known magic number, that is the wrong
    diagnosis. Returns None for data that claims no format (in ``formats``,
    Pillow's names, when given).
    """
    if data.startswith(_PNG_SIGNATURE):
        return None if formats is not None and "PNG" not in formats else _png_header_damage(data)
    claimed = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        claimed = "WEBP"
    if claimed is None or (formats is not None and claimed not in formats):
        return None
    return f"damaged {claimed} file: its header cannot be read"


def _png_header_damage(data: bytes) -> str:
    """What is wrong with the IHDR chunk of data that starts with the PNG signature."""
    start = len(_PNG_SIGNATURE)
    if len(data) < start + 25:  # length, "IHDR", 13 bytes, CRC
        return f"truncated PNG: the file ends inside its header ({len(data)} bytes)"
    length, kind = struct.unpack_from(">I4s", data, start)
    if kind != b"IHDR" or length != 13:
        return f"damaged PNG: the first chunk is {kind!r} of {length} bytes, not a 13-byte IHDR"
    stored = int.from_bytes(data[start + 21 : start + 25], "big")
    if zlib.crc32(data[start + 4 : start + 21]) != stored:
        return "damaged PNG: CRC mismatch in IHDR (the header chunk)"
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, start + 8)
    return (
        f"damaged PNG: its IHDR cannot be read (width {width}, height {height}, "
        f"bit depth {depth}, colour type {colour}, interlace {interlace})"
    )


def _to_grey(image: Image.Image, source: str | Path) -> Image.Image:
    """Apply the conversion rule of the module docstring."""
    mode = image.mode
    if mode == "L":
        return image
    if mode == "1":
        return image.convert("L")
    if mode in _WIDE_INT_MODES:
        wide = np.asarray(image).astype(np.int64)  # byte order and sign made native
        return Image.fromarray(((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8))
    if mode == "F":
        return Image.fromarray(as_uint8_images(np.asarray(image), source))
    try:
        if mode == "P":
            image = image.convert("RGBA")  # a transparent palette entry becomes alpha 0
        if image.mode in _ALPHA_MODES:
            rgba = image.convert("RGBA")
            black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            image = Image.alpha_composite(black, rgba)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return image.convert("L")
    except ValueError:
        raise DataError(source, f"image mode {mode} cannot be converted to grey") from None


def _read(path: str) -> bytes:
    """An image file's bytes: a regular file of at most :data:`MAX_FILE_BYTES`."""
    return files.read_file(path, limit=MAX_FILE_BYTES)


def _decode_chunk(
    paths: Sequence[str], shape: tuple[int, int], first: str
) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """Decode ``paths`` into one array ``(len(paths), h, w)``, or report the first problem.

    Runs in worker processes, so a problem comes back as ``(source, problem)``
    rather than as an exception (DataError does not survive a pickle round
    trip). Plain 8-bit grey PNGs take the batch fast path; every other file
    goes through Pillow and is pasted into one tall canvas, converted to an
    array once (converting each small image costs more than decoding it).
    """
    h, w = shape
    images = np.empty((len(paths), h, w), dtype=np.uint8)
    plain_at: list[int] = []
    plain_rows: list[bytes] = []
    pasted_at: list[int] = []
    canvas: Image.Image | None = None
    for i, path in enumerate(paths):
        try:
            data = _read(path)
            rows = plain_png_rows(data, h, w)
            if rows is not None:
                plain_at.append(i)
                plain_rows.append(rows)
                continue
            grey = _decode_grey(data, path, size=(w, h), first=first)
        except DataError as exc:
            return None, (exc.source, exc.problem)
        if canvas is None:
            canvas = Image.new("L", (w, h * len(paths)))
        canvas.paste(grey, (0, i * h))
        pasted_at.append(i)
    if plain_rows:
        # n files' scanlines, each row a filter-type byte then w pixels: (n, h, 1 + w)
        filtered = np.frombuffer(b"".join(plain_rows), dtype=np.uint8).reshape(-1, h, w + 1)
        images[plain_at] = unfilter_png_rows(filtered)
    if canvas is not None:
        # (len*h, w) -> (len, h, w), keeping the pasted rows only
        images[pasted_at] = np.asarray(canvas).reshape(len(paths), h, w)[pasted_at]
    return images, None


# ---------------------------------------------------------------- plain PNG fast path
#
# Pillow spends about 100 us of Python per image on chunk parsing, decoder set-up
# and bookkeeping, which is most of the time for a 28x28 digit. The commonest
# tree (MNIST as PNG) holds nothing but 8-bit grey, non-interlaced PNGs, and
# those need only zlib and the five PNG row filters, which numpy can undo for a
# whole batch of images at once. The fast path accepts a file only when every
# chunk's CRC, the zlib stream and the data length check out; anything else
# (colour, 16-bit, interlaced, a damaged file, another size) goes to Pillow,
# which decodes it or names the problem. Tests check it against Pillow, byte
# for byte, on every filter type.

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND_CHUNK = b"\0\0\0\0IEND\xaeB`\x82"  # length 0, type, CRC: the same in every PNG
# IDAT data this short (1 KB for 1 MiB) cannot unpack to more than this, so it is
# inflated in one call; longer data is inflated only as far as the image needs.
_INFLATE_AT_ONCE = 1 << 20


@functools.lru_cache(maxsize=8)
def _plain_png_start(h: int, w: int) -> bytes:
    """Signature and whole IHDR chunk (CRC included) of a plain 8-bit grey ``w`` x ``h`` PNG."""
    body = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # depth 8, grey, no interlace
    return _PNG_SIGNATURE + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


# Kept, not Pillow: bench_load's first load needs it for its >= 2x target (measured with
# Pillow only in the pool: 1.3-1.8x on 2 shared cores; with this decoder 2.5-3.3x).
def plain_png_size(data: bytes) -> tuple[int, int] | None:
    """``(h, w)`` as a PNG's header gives them, for :func:`plain_png_rows`; None for data
    that is not a PNG (that function checks the rest, the header's CRC included)."""
    if len(data) < len(_PNG_SIGNATURE) + 16 or not data.startswith(_PNG_SIGNATURE):
        return None
    w, h = struct.unpack_from(">II", data, len(_PNG_SIGNATURE) + 8)
    return h, w


def plain_png_rows(
    data: bytes, h: int, w: int, ancillary: frozenset[bytes] | None = None
) -> bytes | None:
    """The filtered scanlines of an 8-bit grey, non-interlaced ``w`` x ``h`` PNG, else None.

    ``ancillary``: the ancillary chunk types allowed (None: any, as for a tree's
    images, whose reading no ancillary chunk changes); a file with another is not plain.
    """
    # The header is fixed by (h, w), so one comparison checks it and its CRC.
    start = _plain_png_start(h, w)
    if not data.startswith(start) or not data.endswith(_IEND_CHUNK):
        return None
    view = memoryview(data)
    pos, stop = len(start), len(data) - len(_IEND_CHUNK)
    idat: list[memoryview] = []
    while pos < stop:
        length, kind = struct.unpack_from(">I4s", data, pos)
        body_end = pos + 8 + length
        if body_end + 4 > stop or zlib.crc32(view[pos + 4 : body_end]) != int.from_bytes(
            view[body_end : body_end + 4], "big"
        ):
            return None
        if kind == b"IDAT":
            idat.append(view[pos + 8 : body_end])
        elif not kind[0] & 0x20:  # a critical chunk (PLTE, a second IHDR or IEND): not plain
            return None
        elif ancillary is not None and kind not in ancillary:
            return None
        pos = body_end + 4
    expected = h * (w + 1)
    packed = b"".join(idat)
    try:
        if len(packed) * files.DEFLATE_MAX_RATIO <= _INFLATE_AT_ONCE:
            rows = zlib.decompress(packed)  # cannot unpack to much: the quicker call
        else:
            # One byte past the expected length, no more: IDAT may unpack to gigabytes.
            inflate = zlib.decompressobj()
            rows = inflate.decompress(packed, expected + 1)
            if not inflate.eof:
                return None
    except zlib.error:
        return None
    if len(rows) != expected or max(rows[:: w + 1]) > 4:
        return None
    return rows


def unfilter_png_rows(filtered: np.ndarray) -> np.ndarray:
    """Undo PNG row filtering (PNG spec, section 9) for a batch of 8-bit grey images.

    Parameters
    ----------
    filtered : ndarray of shape (n, h, 1 + w), uint8
        Each image's decompressed scanlines: a filter type (0 None, 1 Sub,
        2 Up, 3 Average, 4 Paeth), then ``w`` filtered bytes.

    Returns
    -------
    images : ndarray of shape (n, h, w), uint8
    """
    n, h, stride = filtered.shape
    images = np.empty((n, h, stride - 1), dtype=np.uint8)
    above = np.zeros((n, stride - 1), dtype=np.uint8)  # the row above the first is zeros
    for y in range(h):
        kinds, line = filtered[:, y, 0], filtered[:, y, 1:]
        row = line.copy()  # type 0: the bytes are the pixels
        # uint8 arithmetic wraps modulo 256, as the filters are defined.
        sub = kinds == 1
        if sub.any():
            row[sub] = np.cumsum(line[sub], axis=1, dtype=np.uint8)
        up = kinds == 2
        if up.any():
            row[up] = line[up] + above[up]
        for kind in (3, 4):
            chosen = kinds == kind
            if chosen.any():
                row[chosen] = _unfilter_left_to_right(line[chosen], above[chosen], kind)
        images[:, y] = row
        above = row
    return images


def _unfilter_left_to_right(line: np.ndarray, above: np.ndarray, kind: int) -> np.ndarray:
    """Average (3) and Paeth (4) need each pixel's left neighbour: one column at a time.

    ``line`` and ``above`` are ``(m, w)``: the rows of m images, vectorised across images.
    """
    m, w = line.shape
    line16, above16 = line.astype(np.int16), above.astype(np.int16)
    out = np.empty((m, w), dtype=np.uint8)
    left = np.zeros(m, dtype=np.int16)
    upper_left = np.zeros(m, dtype=np.int16)
    for x in range(w):
        up = above16[:, x]
        if kind == 3:
            predicted = (left + up) >> 1
        else:
            estimate = left + up - upper_left
            to_left, to_up = np.abs(estimate - left), np.abs(estimate - up)
            to_upper_left = np.abs(estimate - upper_left)
            predicted = np.where(
                (to_left <= to_up) & (to_left <= to_upper_left),
                left,
                np.where(to_up <= to_upper_left, up, upper_left),
            )
        left = (line16[:, x] + predicted) & 0xFF
        out[:, x] = left
        upper_left = up
    return out


def decode_files(
    paths: Sequence[str | Path],
    *,
    workers: int | None = None,
    min_parallel: int | None = None,
) -> np.ndarray:
    """Decode image files of one size into a uint8 array ``(n, h, w)``, in order.

    Parameters
    ----------
    paths : sequence of str or Path
        Image files; all must decode to the size of the first.
    workers : int, optional
        Worker processes; ``None`` means ``os.cpu_count()``, 1 decodes here.
    min_parallel : int, optional
        Fewer files than this are decoded here, since starting workers would
        cost more; default :data:`PARALLEL_MIN_FILES`.

    Returns
    -------
    images : ndarray of shape (n, h, w), uint8
    """
    names = [os.fspath(p) for p in paths]
    if not names:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    # The first image fixes the size every worker checks against.
    first = np.asarray(_decode_grey(_read(names[0]), names[0]))
    files.check_size(
        names[0], len(names) * first.size, files.MAX_DATA_BYTES,
        f"{len(names):,} images of {first.shape[1]}x{first.shape[0]} pixels (this one's size)",
    )  # fmt: skip
    if min_parallel is None:
        min_parallel = PARALLEL_MIN_FILES
    n_workers = _n_workers(workers) if len(names) >= min_parallel else 1
    size = _chunk_size(len(names), n_workers)
    chunks = [(names[i : i + size], first.shape, names[0]) for i in range(0, len(names), size)]
    parts = []
    with contextlib.closing(_imap_chunks(_decode_chunk, chunks, n_workers)) as results:
        for part, problem in results:
            if problem is not None:
                raise DataError(*problem)
            parts.append(part)
    return np.concatenate(parts)


# ---------------------------------------------------------------- workers


def _n_workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return workers


def _chunk_size(n_items: int, workers: int) -> int:
    """Items per chunk: all in one when serial, else CHUNKS_PER_WORKER chunks per worker."""
    chunks = 1 if workers <= 1 else workers * CHUNKS_PER_WORKER
    return max(1, math.ceil(n_items / chunks))


def _imap_chunks(
    fn: Callable[..., Any], chunks: list[tuple[Any, ...]], workers: int
) -> Generator[Any, None, None]:
    """Yield ``fn(*chunk)`` for each chunk, in order; in worker processes when ``workers > 1``.

    Closing the generator early (the caller found a problem) cancels the
    chunks not yet started.
    """
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield fn(*chunk)
        return
    context = multiprocessing.get_context(START_METHOD)
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
        with warnings.catch_warnings():
            # Python 3.12+ warns when forking a process that runs threads (numpy's
            # BLAS pool always does). The children run only fn: Pillow and numpy
            # code that takes no lock those threads could be holding.
            warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
            futures = [pool.submit(fn, *chunk) for chunk in chunks]
        try:
            for future in futures:
                yield future.result()
        finally:
            pool.shutdown(cancel_futures=True)


# ---------------------------------------------------------------- the walk
#
# A cached load of a big tree is mostly this walk, since every file's size and
# mtime must be read to notice a change: one stat call per file. Measured on 70,000
# files (2-core AMD EPYC, warm page cache): listing the folders takes 0.035 s, and
# the stat calls 0.165 s: about 1.3 us of kernel time per file (a C loop listing and
# stat-ing them all takes 0.11 s) and 0.7 us of Python building each os.stat_result.
# Threads cannot share that work (each call takes the GIL back: two threads took
# longer than one), so a big tree's stat calls are shared with one forked process:
# both take chunks of files from a pipe until none is left, and the child writes what
# it read into shared memory. This process first does what it can meanwhile (reads the
# cache entry). A child that fails leaves its chunks unmarked, and they are read here.


@dataclass
class _Folder:
    """One folder of the walk: its sub-folders and the names of its files."""

    path: Path
    rel: str  # relative to the root: "" for the root, else ending in "/"
    folders: dict[str, _Folder] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


@dataclass
class _Walk:
    root: _Folder
    strays: list[str] = field(default_factory=list)  # relative paths skipped
    listed: list[_Folder] = field(default_factory=list)  # every folder, in the order listed
    # Every file of ``listed``, in order: its path relative to the root; its size
    # (row 0) and st_mtime_ns (row 1).
    paths: list[str] = field(default_factory=list)
    stats: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int64))

    def listing(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Relative path, size and mtime_ns of every file walked: what the cache compares.

        One list and two arrays rather than one tuple per file: a cached load of
        70,000 files should not build 70,000 tuples.
        """
        return self.paths, self.stats[0], self.stats[1]


# root / split / class / file: nothing deeper belongs to a tree.
_MAX_DEPTH = 3
# Stat through a folder descriptor where the OS allows: the kernel then looks
# up one name instead of the whole path.
_SCANDIR_FD = os.scandir in os.supports_fd
_STAT_AT = os.stat in os.supports_dir_fd
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# At least this many files for a second process to share the stat calls. Forking,
# starting and reaping it cost about 2.5 ms, and after the fork each heap page either
# process first writes is copied. Measured, a whole cached reload (2-core AMD EPYC,
# idle) without and with the child: 5,000 files 16.7 / 17.6 ms, 10,000 31.3 / 28.8 ms,
# 20,000 63 / 54 ms, 70,000 231 / 153 ms.
PARALLEL_STAT_MIN_FILES = 10_000
# Chunks the files are cut into for the two processes: enough that neither waits
# long for the other's last chunk, few enough that each is one byte in the pipe.
_STAT_CHUNKS = 64


def _walk(root: Path, meanwhile: Callable[[], object] | None = None) -> _Walk:
    """Walk ``root`` once with os.scandir, down to the class folders' files, and stat them.

    ``meanwhile`` is called once, in this process, while a forked child starts
    on the stat calls (or before them, when they are not shared).
    """
    if not root.is_dir():
        raise DataError(root, "no such folder" if not root.exists() else "is not a folder")
    walk = _Walk(_Folder(root, ""))
    stack = [(walk.root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            _list_folder(folder, walk.strays)
        except OSError as exc:
            raise _unreadable(folder, exc) from None
        walk.listed.append(folder)
        if depth + 1 < _MAX_DEPTH:
            stack.extend((child, depth + 1) for child in folder.folders.values())

    def alongside_the_stat_calls() -> None:
        if meanwhile is not None:
            meanwhile()
        for folder in walk.listed:
            rel = folder.rel
            walk.paths += [rel + name for name in folder.names]

    walk.stats = _stat_files(walk.listed, alongside_the_stat_calls)
    return walk


def _unreadable(folder: _Folder, exc: OSError) -> DataError:
    where = Path(exc.filename) if isinstance(exc.filename, str) else folder.path
    return DataError(folder.path / where, f"cannot read: {exc.strerror or exc}")


def _list_folder(folder: _Folder, strays: list[str]) -> None:
    if not _SCANDIR_FD:
        with os.scandir(folder.path) as entries:
            _fill(folder, entries, strays)
        return
    fd = os.open(folder.path, os.O_RDONLY | _O_DIRECTORY)
    try:
        with os.scandir(fd) as entries:
            _fill(folder, entries, strays)
    finally:
        os.close(fd)


def _fill(folder: _Folder, entries: Iterator[os.DirEntry[Any]], strays: list[str]) -> None:
    # One pass per file: keep it lean. No stat here: is_dir() reads the entry's type.
    names = folder.names
    for entry in entries:
        name = entry.name
        if name[0] == "." or name.lower() in STRAY_NAMES:
            strays.append(folder.rel + name)
        elif entry.is_dir():
            folder.folders[name] = _Folder(folder.path / name, f"{folder.rel}{name}/")
        else:
            names.append(name)


def _stat_files(
    folders: list[_Folder], meanwhile: Callable[[], object] | None = None
) -> np.ndarray:
    """``(2, n)`` int64: the size and st_mtime_ns of the files of ``folders``, in order.

    ``meanwhile``: called once here, while the child (if any) starts on the stat calls.
    """
    n = sum(len(folder.names) for folder in folders)
    if n < PARALLEL_STAT_MIN_FILES or not _can_fork():
        if meanwhile is not None:
            meanwhile()
        stats = np.empty((2, n), dtype=np.int64)
        _stat_range(folders, 0, n, stats)
        return stats
    bounds = [n * i // _STAT_CHUNKS for i in range(_STAT_CHUNKS + 1)]
    # Shared with the child (anonymous memory, no file): the stats, then one byte per
    # chunk, set once the chunk is read. The arrays keep the mapping alive.
    shared = mmap.mmap(-1, 16 * n + _STAT_CHUNKS)
    stats = np.frombuffer(shared, dtype=np.int64, count=2 * n).reshape(2, n)
    done = np.frombuffer(shared, dtype=np.uint8, count=_STAT_CHUNKS, offset=16 * n)
    _share_chunks(folders, bounds, stats, done, meanwhile)
    # Any chunk the child took but did not finish (it failed) is read here.
    for chunk in np.flatnonzero(done == 0).tolist():
        _stat_range(folders, bounds[chunk], bounds[chunk + 1], stats)
    return stats


def _share_chunks(
    folders: list[_Folder],
    bounds: list[int],
    stats: np.ndarray,
    done: np.ndarray,
    meanwhile: Callable[[], object] | None,
) -> None:
    """Read the chunks' stats in this process and one forked child, each taking the next."""
    queue_read, queue_write = os.pipe()
    os.write(queue_write, bytes(range(len(bounds) - 1)))  # at most 256 bytes: never blocks
    os.close(queue_write)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
            try:
                pid = os.fork()
            except OSError:  # no process to spare (EAGAIN, ENOMEM): this one reads them all
                pid = -1
        if pid == 0:  # the child: read, then leave at once (no atexit, no buffers flushed)
            code = 1
            try:
                _take_chunks(queue_read, folders, bounds, stats, done)
                code = 0
            finally:
                os._exit(code)
        try:
            if meanwhile is not None:
                meanwhile()
            _take_chunks(queue_read, folders, bounds, stats, done)
        finally:
            while os.read(queue_read, 256):  # a failure here: the child need not go on
                pass
            if pid > 0:
                # ECHILD when SIGCHLD is ignored: waitpid then returns once the child is gone.
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
    finally:
        os.close(queue_read)


def _take_chunks(
    queue: int, folders: list[_Folder], bounds: list[int], stats: np.ndarray, done: np.ndarray
) -> None:
    while taken := os.read(queue, 1):
        chunk = taken[0]
        _stat_range(folders, bounds[chunk], bounds[chunk + 1], stats)
        done[chunk] = 1


def _stat_range(folders: list[_Folder], start: int, stop: int, stats: np.ndarray) -> None:
    """Fill ``stats[:, start:stop]``, the files numbered so in ``folders``' order."""
    first = 0  # the number of the folder's first file
    for folder in folders:
        names = folder.names
        lo, hi = max(start - first, 0), min(stop - first, len(names))
        if lo < hi:
            try:
                results = _stat_names(folder.path, names[lo:hi])
            except OSError as exc:
                raise _unreadable(folder, exc) from None
            at = first + lo
            stats[0, at : at + len(results)] = [result.st_size for result in results]
            stats[1, at : at + len(results)] = [result.st_mtime_ns for result in results]
        first += len(names)
        if first >= stop:
            break


def _stat_names(folder: Path, names: list[str]) -> list[os.stat_result]:
    if not _STAT_AT:  # plain strings: 70,000 Paths cost more than the calls
        prefix = os.fspath(folder) + os.sep
        return [os.stat(prefix + name) for name in names]  # noqa: PTH116
    fd = os.open(folder, os.O_RDONLY | _O_DIRECTORY)
    try:
        stat = os.stat
        return [stat(name, dir_fd=fd) for name in names]
    finally:
        os.close(fd)


def _can_fork() -> bool:
    """Whether a helper process may be forked (:func:`digitlab.drawing.can_fork`) and has
    a core to run on now: fewer other tasks running than usable cores.

    With every core taken, the child waits for one and this process waits for the child:
    measured with two other busy processes on 2 cores, a cached reload of 10,000 files
    took 86 ms with the child, 51 ms without (70,000 files: 301 ms, 284 ms).
    """
    return can_fork() and _running_elsewhere() < usable_cores()


def _running_elsewhere(loadavg: str = "/proc/loadavg") -> int:
    """Tasks running or ready to run right now besides this one (Linux's count in
    ``/proc/loadavg``, machine-wide); 0 when it cannot be read."""
    try:
        with open(loadavg, "rb") as handle:  # noqa: PTH123 (20 us a read; Path costs more)
            running = int(handle.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(running - 1, 0)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


# ---------------------------------------------------------------- the layout


@dataclass
class _Class:
    label: int
    folder: _Folder

    def paths(self) -> list[str]:
        """The class's image files in natural name order."""
        prefix = os.fspath(self.folder.path) + os.sep  # plain strings: 70,000 Paths cost 0.2 s
        return [prefix + name for name in sorted(self.folder.names, key=natural_key)]


def natural_key(name: str) -> tuple[str, str]:
    """Sort key putting ``img_2`` before ``img_10``; the name itself breaks ties.

    Digit runs are zero-padded to a common width, so keys compare as plain
    strings: twice as fast as lists of numbers and text over 70,000 names.
    """
    return _DIGITS.sub(_pad_digits, name.lower()), name


def _pad_digits(match: re.Match[str]) -> str:
    return match[0].zfill(_NUMBER_WIDTH)


def _layout(walk: _Walk) -> dict[str, list[_Class]]:
    """Check the walked tree and return ``{split: classes sorted by label}``."""
    root = walk.root
    skipped = list(walk.strays)
    by_split: dict[str, _Folder] = {}
    for name, folder in root.folders.items():
        split = SPLIT_FOLDERS.get(name.lower())
        if split in by_split:
            raise DataError(
                root.path,
                f"has two {split} split folders: {by_split[split].path.name!r} and {name!r}",
            )
        if split is not None:
            by_split[split] = folder
    if not by_split:
        if not root.folders:
            raise DataError(
                root.path,
                "holds no class folders (0/, 1/, ...) and no train/ or test/ split folders",
            )
        by_split = {"train": root}
    elif "train" not in by_split:
        raise DataError(
            root.path, "has a test split folder but no train (or training) split folder"
        )
    else:
        _refuse_extra_folders(root, by_split)
    _check_loose_files(root, skipped)
    layout = {
        split: _classes(folder, skipped)
        for split, folder in sorted(by_split.items(), key=_train_first)
    }
    if skipped:
        _warn_skipped(root.path, skipped)
    return layout


def _train_first(item: tuple[str, _Folder]) -> int:
    return 0 if item[0] == "train" else 1


def _refuse_extra_folders(root: _Folder, by_split: dict[str, _Folder]) -> None:
    for name, folder in root.folders.items():
        if name.lower() not in SPLIT_FOLDERS:
            kind = "a class folder" if _DIGITS.fullmatch(name) else "a folder"
            raise DataError(
                folder.path,
                f"{kind} beside the split folders ({', '.join(sorted(f.path.name for f in by_split.values()))}); "
                "expected only train/ and test/ (or training/ and testing/)",
            )


def _check_loose_files(folder: _Folder, skipped: list[str]) -> None:
    """Files outside class folders: images have no label (error); others are skipped."""
    for name in sorted(folder.names):
        if _is_image_name(name):
            raise DataError(
                folder.path / name, "image is not inside a class folder, so it has no label "
                "(a flat folder of images needs a labels.csv, or --labels FILE)",
            )
        skipped.append(folder.rel + name)


def _classes(split: _Folder, skipped: list[str]) -> list[_Class]:
    if split.rel:  # a split folder, not the root itself
        _check_loose_files(split, skipped)
    if not split.folders:
        raise DataError(split.path, "split folder is empty: no class folders (0/, 1/, ...)")
    classes: dict[int, _Class] = {}
    for name, folder in split.folders.items():
        if not _DIGITS.fullmatch(name):
            raise DataError(
                folder.path,
                f"folder name {name!r} is not a label (class folders are named 0, 1, 2, ...)",
            )
        label = int(name)
        if label > MAX_LABEL:  # the rule of formats.as_labels, checked here to name the folder
            raise DataError(
                folder.path,
                f"folder name {name!r} is label {label}, too large for a class "
                f"({LABEL_RULE})",
            )
        if label in classes:
            other = classes[label].folder.path.name
            raise DataError(split.path, f"folders {other!r} and {name!r} both mean label {label}")
        _check_class_folder(folder)
        classes[label] = _Class(label, folder)
    return [classes[label] for label in sorted(classes)]


def _check_class_folder(folder: _Folder) -> None:
    if folder.folders:
        inner = sorted(folder.folders)[0]
        raise DataError(folder.path / inner, "unexpected folder inside a class folder")
    # One C loop over the names for the common case, lower-case suffixes (70,000 names:
    # 3 ms instead of 9); only when a name fails it are they looked at again, case ignored.
    if not all(map(str.endswith, folder.names, itertools.repeat(_IMAGE_SUFFIXES))):
        for name in folder.names:
            if not name.lower().endswith(_IMAGE_SUFFIXES):
                raise DataError(
                    folder.path / name,
                    f"not an image file (expected one of {', '.join(sorted(IMAGE_EXTENSIONS))})",
                )
    if not folder.names:
        raise DataError(folder.path, "class folder holds no images")


def _warn_skipped(root: Path, skipped: list[str]) -> None:
    shown = ", ".join(sorted(skipped)[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    warnings.warn(
        f"{root}: skipped {len(skipped)} file(s) or folder(s) that are not images in class folders: {shown}{more}",
        DataWarning,
        stacklevel=4,
    )


# ---------------------------------------------------------------- public API


def read_image_tree(root: str | Path, *, cache: bool = True, workers: int | None = None) -> Splits:
    """Read an image folder tree (layouts and conversion rule in the module docstring).

    Parameters
    ----------
    root : str or Path
        The tree's top folder.
    cache : bool
        Reuse the arrays decoded by an earlier load of the same, unchanged
        tree, and store them after decoding (see :mod:`digitlab.data.cache`).
    workers : int, optional
        Decoding processes for big trees; ``None`` means ``os.cpu_count()``.

    Returns
    -------
    splits : dict
        ``{"train": (images, labels)}`` and ``"test"`` when the tree has one;
        images uint8 ``(n, h, w)``, labels int64 ``(n,)``.

    Raises
    ------
    DataError
        Naming the file or folder: a folder name that is not a label, an empty
        class folder or split, a non-image file in a class folder, a corrupt
        image, images of different sizes.
    """
    root = Path(root)
    # The one walk: layout checks and cache both use it. The tree's cache entry is
    # read while the walk's stat calls run, and used only if it was made from the
    # very files listed (same paths, sizes and mtimes).
    found: list[tree_cache.Entry | None] = []
    walk = _walk(root, meanwhile=(lambda: found.append(tree_cache.find(root))) if cache else None)
    layout = _layout(walk)
    if not cache:
        return _decode_layout(layout, workers)
    listing = walk.listing()
    entry = found.pop() if found else None
    if entry is not None and entry.splits.keys() == layout.keys() and entry.matches(root, *listing):
        return entry.splits
    entry = None  # not kept in memory while decoding
    splits = _decode_layout(layout, workers)
    tree_cache.store(root, tree_cache.tree_key(root, *listing), splits, listing)
    return splits


Listing = dict[str, tuple[list[str], np.ndarray]]
"""``{split: (image files, labels int64)}``: a layout read but not decoded."""


def list_image_tree(root: str | Path) -> Listing:
    """The image files of a tree and their labels, checked but not decoded.

    Returns ``{split: (paths, labels int64)}`` in the order :func:`read_image_tree`
    gives the images: for a reader that decodes each file in its own way
    (``--normalise``: as ``digitlab predict`` reads pictures).
    """
    return {split: _listing(classes) for split, classes in _layout(_walk(Path(root))).items()}


def _listing(classes: list[_Class]) -> tuple[list[str], np.ndarray]:
    """A split's image files, class by class, and their labels (int64)."""
    per_class = [cls.paths() for cls in classes]
    counts = [len(class_paths) for class_paths in per_class]
    labels = np.repeat(np.array([cls.label for cls in classes], dtype=np.int64), counts)
    return [path for class_paths in per_class for path in class_paths], labels


def _decode_layout(layout: dict[str, list[_Class]], workers: int | None) -> Splits:
    return decode_listing({split: _listing(classes) for split, classes in layout.items()},
                          workers=workers)


def decode_listing(
    listing: Listing,
    *,
    decode: Callable[[list[str]], np.ndarray] | None = None,
    workers: int | None = None,
) -> Splits:
    """Decode every split's files into ``{split: (images, labels)}``.

    ``decode(paths) -> uint8 (n, h, w)`` decodes them, by default
    :func:`decode_files` (one size for all).
    """
    paths = [path for split_paths, _ in listing.values() for path in split_paths]
    # All splits in one batch, so the workers start once and stay evenly loaded.
    images = decode_files(paths, workers=workers) if decode is None else decode(paths)
    splits: Splits = {}
    start = 0
    for split, (_, split_labels) in listing.items():
        stop = start + len(split_labels)
        splits[split] = check_pair(images[start:stop], split_labels, split)
        start = stop
    return splits


def is_image_tree(path: str | Path) -> bool:
    """Whether ``path`` looks like an image tree: a folder with split or class sub-folders.

    Cheap (lists one folder); :func:`read_image_tree` does the real checks.
    """
    try:
        with os.scandir(path) as entries:
            names = [entry.name for entry in entries if entry.is_dir()]
    except OSError:
        return False
    return any(name.lower() in SPLIT_FOLDERS or _DIGITS.fullmatch(name) for name in names)


def write_image_tree(
    root: str | Path, splits: Splits, *, fmt: str = "png", workers: int | None = None
) -> None:
    """Write splits as a Kaggle-layout tree: ``root/train/<label>/train_image_<i>.png``.

    ``i`` counts from 1 through the split in its stored order. The tree is
    built under a temporary name and renamed into place, so a failed write
    leaves nothing behind.

    Parameters
    ----------
    root : str or Path
        The new tree's folder; it must not exist yet, or be empty.
    splits : dict
        ``{"train": (images, labels), "test": ...}``: images uint8 ``(n, h, w)``,
        labels int64 ``(n,)``.
    fmt : {"png", "bmp", "tiff", "webp", "jpeg"}
        File format. All but "jpeg" (lossy) keep every pixel exactly.
    workers : int, optional
        Encoding processes for big trees; ``None`` means ``os.cpu_count()``.
    """
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; choose from {', '.join(WRITE_FORMATS)}")
    suffix = WRITE_FORMATS[fmt][1]
    jobs: list[tuple[str, np.ndarray]] = []  # (relative path, image)
    for split, (images, labels) in splits.items():
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        images, labels = check_pair(images, labels, f"{root} ({split})")
        jobs.extend(
            (f"{split}/{label}/{split}_image_{i}{suffix}", image)
            for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True), start=1)
        )
    # Grouped by folder, so parallel workers mostly create files in different
    # folders instead of queueing on one folder's lock.
    jobs.sort(key=lambda job: job[0].rsplit("/", 1)[0])
    n_workers = _n_workers(workers) if len(jobs) >= PARALLEL_MIN_FILES else 1
    size = _chunk_size(len(jobs), n_workers)
    with atomic_dir(root) as tmp:
        for folder in sorted({rel.rsplit("/", 1)[0] for rel, _ in jobs}):
            (tmp / folder).mkdir(parents=True)
        chunks = []
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            rels = [rel for rel, _ in batch]
            images = np.stack([image for _, image in batch])  # one pickle per chunk
            chunks.append((os.fspath(tmp), rels, images, fmt))
        for _ in _imap_chunks(_write_chunk, chunks, n_workers):
            pass


def _write_chunk(folder: str, rels: list[str], images: np.ndarray, fmt: str) -> None:
    pil_format, _, options = WRITE_FORMATS[fmt]
    for rel, image in zip(rels, images, strict=True):
        Image.fromarray(image).save(Path(folder, rel), format=pil_format, **options)
