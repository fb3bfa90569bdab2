"""Named sources and path dispatch."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from digitlab.data import formats
from digitlab.data.sources import digits_raw_values, load, read_path, sample_path
from digitlab.errors import DataError


def test_bundled_sample_is_small_and_real() -> None:
    path = sample_path()
    assert path.is_file()
    assert path.stat().st_size < 1_500_000
    assert (path.parent / "mnist_sample.md").is_file()  # provenance and licence beside it


def test_sample_splits_are_disjoint(sample) -> None:
    train = {row.tobytes() for row in sample.train_images}
    assert not any(row.tobytes() in train for row in sample.test_images)


def test_digits_keep_order_and_raw_values_exactly() -> None:
    digits = load("digits")
    reference = sklearn_digits()
    assert digits.image_shape == (8, 8)
    assert digits.train_images.dtype == np.uint8
    assert digits.train_images.max() == 255
    assert len(digits.train_labels) == 1000
    assert len(digits.test_labels) == 797
    np.testing.assert_array_equal(digits.train_labels, reference.target[:1000])
    np.testing.assert_array_equal(digits.test_labels, reference.target[1000:])
    raw = digits_raw_values(np.concatenate([digits.train_images, digits.test_images]))
    np.testing.assert_array_equal(raw, reference.images.astype(np.int64))
    # the classic exercise's "first 1,000 train, next 500 test"
    classic = digits.take("test", 0, 500)
    np.testing.assert_array_equal(classic.test_labels, reference.target[1000:1500])


def test_path_dispatch_by_suffix(tmp_path, small_splits) -> None:
    formats.write_npz(tmp_path / "d.npz", small_splits)
    loaded = load(tmp_path / "d.npz")
    np.testing.assert_array_equal(loaded.test_images, small_splits["test"][0])
    formats.write_csv(tmp_path / "d.csv", *small_splits["train"])
    from_csv = load(tmp_path / "d.csv", test_fraction=0.2, seed=1)
    assert len(from_csv.train_labels) + len(from_csv.test_labels) == 50
    assert any("held out" in note for note in from_csv.notes)
    formats.write_idx_folder(tmp_path / "idx", small_splits)
    np.testing.assert_array_equal(read_path(tmp_path / "idx")["train"][1], small_splits["train"][1])


def test_unknown_paths_and_suffixes(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "missing.npz")
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(DataError, match="unknown format"):
        load(odd)


@pytest.mark.slow
def test_fashion_mnist_from_debian_package() -> None:
    from pathlib import Path

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("apt-get install dataset-fashion-mnist")
    data = load("fashion-mnist")
    assert data.train_images.shape == (60000, 28, 28)
    assert data.test_images.shape == (10000, 28, 28)
    assert data.counts("test") == dict.fromkeys(range(10), 1000)
    assert data.class_names[9] == "Ankle boot"


def test_gzipped_idx_folder_is_decoded_once_and_read_again_when_changed(
        tmp_path, small_splits, monkeypatch) -> None:
    """The second read of a folder of .gz IDX files comes from the cache; replacing a
    file (other pixels) is noticed; raw IDX files are not cached at all."""
    import os

    from digitlab.data import cache, sources

    folder = tmp_path / "idx"
    formats.write_idx_folder(folder, small_splits)
    inflated: list[str] = []
    real_read = formats.read_idx_folder

    def counted(path):
        inflated.append(str(path))
        return real_read(path)

    monkeypatch.setattr(formats, "read_idx_folder", counted)
    first = read_path(folder)
    again = read_path(folder)
    assert len(inflated) == 1
    for split in small_splits:
        np.testing.assert_array_equal(again[split][0], small_splits[split][0])
        np.testing.assert_array_equal(again[split][1], small_splits[split][1])
        np.testing.assert_array_equal(first[split][0], again[split][0])
    assert len(list(cache.cache_dir().glob("*.npz"))) == 1

    images = folder / "t10k-images-idx3-ubyte.gz"
    stat = images.stat()
    formats.write_idx(images, 255 - small_splits["test"][0])
    os.utime(images, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = read_path(folder)
    assert len(inflated) == 2
    np.testing.assert_array_equal(changed["test"][0], 255 - small_splits["test"][0])

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        kind = "images" if "images" in name else "labels"
        formats.write_idx(raw / name, small_splits["train"][0 if kind == "images" else 1])
    sources.read_idx_folder_cached(raw)
    sources.read_idx_folder_cached(raw)
    assert len(inflated) == 4
    assert len(list(cache.cache_dir().glob("*.npz"))) == 1
