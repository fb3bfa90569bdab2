"""Image folder trees: layouts, order, the conversion rule, bad input, parallel decoding."""

from __future__ import annotations

import errno
import io
import os
import select
import struct
import sys
import threading
import zlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data import files, imagetree
from digitlab.data.imagetree import (
    decode_files,
    decode_image,
    is_image_tree,
    natural_key,
    read_image_tree,
    write_image_tree,
)
from digitlab.errors import DataError, DataWarning, OutputError

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITLAB_CACHE", str(tmp_path / "cache"))


def by_label(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a tree gives back: the split sorted by label, stored order kept within a label."""
    order = np.argsort(labels, kind="stable")
    return images[order], labels[order]


def assert_same(got: Splits, written: Splits) -> None:
    assert got.keys() == written.keys()
    for split, (images, labels) in written.items():
        want_images, want_labels = by_label(images, labels)
        got_images, got_labels = got[split]
        assert got_images.dtype == np.uint8
        assert got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_images, want_images)
        np.testing.assert_array_equal(got_labels, want_labels)


def save_png(path: Path, pixels: np.ndarray | Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(path)
    return path


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def tiny_tree(root: Path, n_per_class: int = 2, classes: tuple[int, ...] = (0, 1)) -> Path:
    """A class-folder tree of 4x4 images whose pixel value identifies each file."""
    for label in classes:
        for i in range(n_per_class):
            save_png(root / str(label) / f"img_{i}.png", np.full((4, 4), 10 * label + i, np.uint8))
    return root


# ---------------------------------------------------------------- layouts


def test_kaggle_layout_round_trips_exactly(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    assert (tmp_path / "tree/train/0").is_dir()
    assert (tmp_path / "tree/test").is_dir()
    assert_same(read_image_tree(tmp_path / "tree"), small_splits)


def test_written_names_follow_kaggle(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    first_label = int(small_splits["train"][1][0])
    assert (tmp_path / f"tree/train/{first_label}/train_image_1.png").is_file()
    n_files = sum(1 for p in (tmp_path / "tree").rglob("*.png"))
    assert n_files == len(small_splits["train"][1]) + len(small_splits["test"][1])


def test_fastai_layout(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    (tmp_path / "tree/train").rename(tmp_path / "tree/training")
    (tmp_path / "tree/test").rename(tmp_path / "tree/testing")
    assert_same(read_image_tree(tmp_path / "tree"), small_splits)


def test_train_split_only_gives_only_train(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", {"train": small_splits["train"]})
    got = read_image_tree(tmp_path / "tree")
    assert list(got) == ["train"]
    assert_same(got, {"train": small_splits["train"]})


def test_class_folders_under_root_give_only_train(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", {"train": small_splits["train"]})
    got = read_image_tree(tmp_path / "tree/train")
    assert list(got) == ["train"]
    assert_same(got, {"train": small_splits["train"]})


@pytest.mark.parametrize("fmt", ["png", "bmp", "tiff", "webp"])
def test_lossless_formats_round_trip(tmp_path: Path, small_splits: Splits, fmt: str) -> None:
    write_image_tree(tmp_path / "tree", small_splits, fmt=fmt)
    suffix = imagetree.WRITE_FORMATS[fmt][1]
    assert next((tmp_path / "tree/train").rglob("*")).is_dir()
    assert all(p.suffix == suffix for p in (tmp_path / "tree").rglob("*.*"))
    assert_same(read_image_tree(tmp_path / "tree"), small_splits)


def test_jpeg_round_trips_closely(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", small_splits, fmt="jpeg")
    got = read_image_tree(tmp_path / "tree")
    want, _ = by_label(*small_splits["train"])
    error = np.abs(got["train"][0].astype(int) - want.astype(int))
    assert error.mean() < 3  # lossy, but the same digits


def test_suffixes_are_case_insensitive(tmp_path: Path) -> None:
    save_png(tmp_path / "t/0/a.PNG", np.full((3, 3), 7, np.uint8))
    Image.fromarray(np.full((3, 3), 9, np.uint8)).save(tmp_path / "t/0/b.JpG", format="PNG")
    images, _ = read_image_tree(tmp_path / "t")["train"]
    np.testing.assert_array_equal(images[:, 0, 0], [7, 9])  # b.JpG holds a PNG: still read


def test_write_refuses_existing_folder_and_unknown_format(
    tmp_path: Path, small_splits: Splits
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_image_tree(tmp_path / "full", small_splits)
    with pytest.raises(ValueError, match="gif"):
        write_image_tree(tmp_path / "new", small_splits, fmt="gif")
    assert not (tmp_path / "new").exists()


def test_is_image_tree(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    assert is_image_tree(tmp_path / "tree")
    assert is_image_tree(tmp_path / "tree/train")  # class folders directly
    assert not is_image_tree(tmp_path / "tree/train/0")  # files only
    assert not is_image_tree(tmp_path / "missing")
    (tmp_path / "other/docs").mkdir(parents=True)
    assert not is_image_tree(tmp_path / "other")


# ---------------------------------------------------------------- order


def test_natural_file_order(tmp_path: Path) -> None:
    for number in (10, 2, 1, 33, 3):
        save_png(tmp_path / f"t/0/train_image_{number}.png", np.full((2, 2), number, np.uint8))
    images, _ = read_image_tree(tmp_path / "t")["train"]
    np.testing.assert_array_equal(images[:, 0, 0], [1, 2, 3, 10, 33])


def test_classes_in_numeric_order(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t", n_per_class=1, classes=(10, 2, 0))
    images, labels = read_image_tree(tmp_path / "t")["train"]
    np.testing.assert_array_equal(labels, [0, 2, 10])
    np.testing.assert_array_equal(images[:, 0, 0], [0, 20, 100])


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["b10.png", "a2.png", "b9.png", "a10.png", "B1.png"]
    assert sorted(names, key=natural_key) == ["a2.png", "a10.png", "B1.png", "b9.png", "b10.png"]


# ---------------------------------------------------------------- conversion rule


def test_grey_is_kept() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(pixels)), "a.png"), pixels)


def test_one_bit_becomes_0_and_255() -> None:
    image = Image.fromarray(np.array([[True, False, True]]))
    assert image.mode == "1"
    np.testing.assert_array_equal(decode_image(encode(image), "a.png"), [[255, 0, 255]])


def test_sixteen_bit_is_rounded_v_over_257() -> None:
    image = Image.fromarray(np.array([[0, 128, 129, 25700, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    decoded = decode_image(encode(image), "a.png")
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, [[0, 0, 1, 100, 255]])


def test_32_bit_integers_are_clipped_then_scaled_as_16_bit() -> None:
    image = Image.fromarray(np.array([[-5, 70000, 771, 255]], dtype=np.int32))
    assert image.mode == "I"
    np.testing.assert_array_equal(decode_image(encode(image, "TIFF"), "a.tif"), [[0, 255, 3, 1]])


def test_float_images_scale_0_to_1() -> None:
    image = Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32))
    assert image.mode == "F"
    np.testing.assert_array_equal(decode_image(encode(image, "TIFF"), "a.tif"), [[0, 64, 128, 255]])


def test_rgb_becomes_itu_601_luminance() -> None:
    image = Image.new("RGB", (4, 1))
    image.putdata([(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)])
    # L = (R*19595 + G*38470 + B*7471 + 2**15) >> 16, Pillow's fixed-point 299/587/114.
    np.testing.assert_array_equal(decode_image(encode(image), "a.png"), [[76, 150, 29, 18]])


def test_rgba_is_composited_onto_black() -> None:
    image = Image.new("RGBA", (4, 1))
    image.putdata([(255, 255, 255, 0), (255, 255, 255, 255), (200, 200, 200, 51), (255, 0, 0, 255)])
    # transparent -> background 0; 200 at alpha 51/255 = 20% -> 40; opaque red -> 76
    np.testing.assert_array_equal(decode_image(encode(image), "a.png"), [[0, 255, 40, 76]])


def test_grey_with_alpha_is_composited_onto_black() -> None:
    image = Image.new("LA", (2, 1))
    image.putdata([(200, 51), (255, 0)])
    np.testing.assert_array_equal(decode_image(encode(image), "a.png"), [[40, 0]])


def test_palette_goes_through_rgba() -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 255, 255, 0, 0, 0, 255, 0, 0])
    image.putdata([0, 1, 2])
    image.info["transparency"] = 0  # white entry 0 is transparent
    data = encode(image)
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(decode_image(data, "a.png"), [[0, 0, 76]])


def test_tree_of_rgba_images_uses_the_rule(tmp_path: Path) -> None:
    image = Image.new("RGBA", (2, 1))
    image.putdata([(255, 255, 255, 0), (200, 200, 200, 51)])
    save_png(tmp_path / "t/train/3/a.png", image)
    images, labels = read_image_tree(tmp_path / "t")["train"]
    np.testing.assert_array_equal(images, [[[0, 40]]])
    np.testing.assert_array_equal(labels, [3])


# ---------------------------------------------------------------- bad input


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    # The tree's size (4x4): a PNG of another size is refused from its header, undecoded.
    bad = save_png(tmp_path / "t/1/broken.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated or corrupt image") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(bad)


def test_corrupt_bytes_name_the_file(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    (tmp_path / "t/0/garbage.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"garbage\.png: truncated or corrupt image"):
        read_image_tree(tmp_path / "t")


def test_non_image_file_in_class_folder_is_an_error(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    (tmp_path / "t/1/notes.txt").write_text("to do")
    with pytest.raises(DataError, match=r"notes\.txt: not an image file"):
        read_image_tree(tmp_path / "t")


def test_known_strays_are_skipped_with_one_warning(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    clean = read_image_tree(tmp_path / "t", cache=False)
    (tmp_path / "t/0/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "t/1/Thumbs.db").write_bytes(b"\xd0\xcf")
    (tmp_path / "t/__MACOSX/0").mkdir(parents=True)
    (tmp_path / "t/__MACOSX/0/._img_0.png").write_bytes(b"junk")
    with pytest.warns(DataWarning, match=r"skipped 3 .*\.DS_Store") as record:
        got = read_image_tree(tmp_path / "t")
    assert len(record) == 1
    assert "Thumbs.db" in str(record[0].message)
    assert "__MACOSX" in str(record[0].message)
    assert_same(got, {"train": clean["train"]})


def test_non_image_outside_class_folders_is_skipped_with_warning(
    tmp_path: Path, small_splits: Splits
) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    (tmp_path / "tree/README.md").write_text("MNIST as PNG")
    with pytest.warns(DataWarning, match="README.md"):
        got = read_image_tree(tmp_path / "tree")
    assert_same(got, small_splits)


def test_image_outside_class_folder_is_an_error(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t/train")
    save_png(tmp_path / "t/train/loose.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"loose\.png: image is not inside a class folder"):
        read_image_tree(tmp_path / "t")


def test_mixed_sizes_name_the_file_and_both_sizes(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")  # 4x4 images
    odd = save_png(tmp_path / "t/1/img_9.png", np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError, match=r"6x5 pixels but .*img_0\.png is 4x4") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(odd)


def test_folder_that_is_not_a_label(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t/train")
    save_png(tmp_path / "t/train/cat/a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="folder name 'cat' is not a label") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(tmp_path / "t/train/cat")


def test_two_folders_for_one_label(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t", classes=(1,))
    save_png(tmp_path / "t/01/a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="both mean label 1"):
        read_image_tree(tmp_path / "t")


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    (tmp_path / "t/7").mkdir()
    with pytest.raises(DataError, match="class folder holds no images") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(tmp_path / "t/7")


def test_class_folder_with_only_strays_is_empty(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    (tmp_path / "t/7").mkdir()
    (tmp_path / "t/7/.DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="holds no images"):  # the error comes before any warning
        read_image_tree(tmp_path / "t")


def test_empty_split_is_named(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t/train")
    (tmp_path / "t/test").mkdir()
    with pytest.raises(DataError, match="split folder is empty") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(tmp_path / "t/test")


def test_folder_inside_class_folder_is_an_error(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    save_png(tmp_path / "t/0/more/a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="unexpected folder inside a class folder"):
        read_image_tree(tmp_path / "t")


def test_root_without_class_or_split_folders(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t/readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match=r"no class folders .* no train/ or test/"):
        read_image_tree(tmp_path / "t")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        read_image_tree(tmp_path / "nowhere")


def test_test_split_without_train(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t/test")
    with pytest.raises(DataError, match="no train"):
        read_image_tree(tmp_path / "t")


def test_both_train_and_training(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t/train")
    tiny_tree(tmp_path / "t/training")
    with pytest.raises(DataError, match="two train split folders"):
        read_image_tree(tmp_path / "t")


def test_unknown_folder_beside_splits(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t/train")
    tiny_tree(tmp_path / "t/valid")
    with pytest.raises(DataError, match="beside the split folders") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(tmp_path / "t/valid")


def _png_claiming_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (with a valid checksum) claims another size."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_decompression_bomb_is_refused() -> None:
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(_png_claiming_size(40_000, 40_000), "bomb.png")


def test_image_between_pillow_limits_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("L", (12, 12)))  # 144 pixels
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(DataError, match="too large"),
    ):
        decode_image(data, "big.png")


def test_no_file_handle_stays_open(tmp_path: Path, small_splits: Splits) -> None:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd")
    write_image_tree(tmp_path / "tree", small_splits)
    before = len(list(fd_dir.iterdir()))
    read_image_tree(tmp_path / "tree", cache=False, workers=1)
    assert len(list(fd_dir.iterdir())) == before


# ---------------------------------------------------------------- the walk's stat calls


@pytest.fixture(params=["serial", "forked"])
def stat_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The walk's stat calls made here, or shared with a forked child; records each fork."""
    forks: list[int] = []
    if request.param == "forked":
        if not hasattr(os, "fork"):
            pytest.skip("needs fork")
        real_fork = os.fork

        def spy_fork() -> int:
            pid = real_fork()
            if pid:
                forks.append(pid)
            return pid

        monkeypatch.setattr(os, "fork", spy_fork)
        monkeypatch.setattr(imagetree, "PARALLEL_STAT_MIN_FILES", 0)
        # Forced even if a test runner's thread is running: the child only stats files.
        monkeypatch.setattr(imagetree, "_can_fork", lambda: True)
    else:
        monkeypatch.setattr(imagetree, "PARALLEL_STAT_MIN_FILES", 1 << 62)
    return forks


def test_walk_stats_every_file(
    tmp_path: Path, small_splits: Splits, stat_mode: list[int], request: pytest.FixtureRequest
) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    (tmp_path / "tree/train/0/.DS_Store").write_bytes(b"stray")  # listed as a stray, not a file
    met: list[int] = []
    walk = imagetree._walk(tmp_path / "tree", meanwhile=lambda: met.append(1))
    paths, sizes, mtimes = walk.listing()
    assert met == [1]
    assert len(stat_mode) == (request.node.callspec.params["stat_mode"] == "forked")
    assert sorted(paths) == sorted(
        p.relative_to(tmp_path / "tree").as_posix() for p in (tmp_path / "tree").rglob("*.png")
    )
    assert sizes.dtype == mtimes.dtype == np.int64
    for path, size, mtime in zip(paths, sizes.tolist(), mtimes.tolist(), strict=True):
        stat = (tmp_path / "tree" / path).stat()
        assert (size, mtime) == (stat.st_size, stat.st_mtime_ns), path


def test_file_gone_before_its_stat_is_named(
    tmp_path: Path, small_splits: Splits, stat_mode: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    gone = sorted((tmp_path / "tree/test").rglob("*.png"))[-1]
    real = imagetree._stat_files

    def listed_then_removed(folders: list[imagetree._Folder], meanwhile: object = None) -> object:
        gone.unlink()
        return real(folders, meanwhile)  # type: ignore[arg-type]

    monkeypatch.setattr(imagetree, "_stat_files", listed_then_removed)
    with pytest.raises(DataError, match="cannot read") as raised:
        read_image_tree(tmp_path / "tree", workers=1)
    assert raised.value.source == str(gone)


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk shares its stat calls with a forked child, however small the tree."""
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    monkeypatch.setattr(imagetree, "PARALLEL_STAT_MIN_FILES", 0)
    monkeypatch.setattr(imagetree, "_can_fork", lambda: True)


def test_chunks_a_failed_child_took_are_read_here(
    tmp_path: Path, small_splits: Splits, monkeypatch: pytest.MonkeyPatch, forking: None
) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    serial = imagetree._stat_range
    parent = os.getpid()
    failed_read, failed_write = os.pipe()
    real = imagetree._stat_names

    def failing_in_the_child(folder: Path, names: list[str]) -> list[os.stat_result]:
        if os.getpid() != parent:
            os.write(failed_write, b"x")
            raise OSError(errno.EIO, "simulated failure", names[0])
        return real(folder, names)

    def until_the_child_failed() -> None:  # the child takes a chunk, fails and exits first
        select.select([failed_read], [], [], 60)

    monkeypatch.setattr(imagetree, "_stat_names", failing_in_the_child)
    try:
        walk = imagetree._walk(tmp_path / "tree", meanwhile=until_the_child_failed)
        assert select.select([failed_read], [], [], 0)[0], "the child did not fail"
    finally:
        os.close(failed_read)
        os.close(failed_write)
    want = np.empty_like(walk.stats)
    serial(walk.listed, 0, want.shape[1], want)
    np.testing.assert_array_equal(walk.stats, want)


def test_chunks_the_child_read_are_not_read_again(
    tmp_path: Path, small_splits: Splits, monkeypatch: pytest.MonkeyPatch, forking: None
) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    parent = os.getpid()
    read_here: list[str] = []
    child_read, child_write = os.pipe()
    parent_read, parent_write = os.pipe()
    real = imagetree._stat_names

    def counting(folder: Path, names: list[str]) -> list[os.stat_result]:
        results = real(folder, names)
        if os.getpid() == parent:
            read_here.extend(names)
            os.write(parent_write, b"x")
        else:  # after its first chunk the child waits for this process to read one, so
            # both read some however the two are scheduled (a busy machine ran the child alone)
            os.write(child_write, b"x")
            select.select([parent_read], [], [], 60)
        return results

    def until_the_child_read_a_chunk() -> None:
        select.select([child_read], [], [], 60)

    monkeypatch.setattr(imagetree, "_stat_names", counting)
    try:
        walk = imagetree._walk(tmp_path / "tree", meanwhile=until_the_child_read_a_chunk)
        assert select.select([child_read], [], [], 0)[0], "the child read nothing"
    finally:
        for fd in (child_read, child_write, parent_read, parent_write):
            os.close(fd)
    n_files = sum(len(folder.names) for folder in walk.listed)
    assert 0 < len(read_here) < n_files


def test_no_process_to_spare_reads_every_chunk_here(
    tmp_path: Path, small_splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    want = imagetree._walk(tmp_path / "tree").stats

    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(imagetree, "PARALLEL_STAT_MIN_FILES", 0)
    monkeypatch.setattr(imagetree, "_can_fork", lambda: True)
    monkeypatch.setattr(os, "fork", no_fork)
    np.testing.assert_array_equal(imagetree._walk(tmp_path / "tree").stats, want)


def test_forked_walk_leaves_no_file_handle_open(
    tmp_path: Path, small_splits: Splits, stat_mode: list[int]
) -> None:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd")
    write_image_tree(tmp_path / "tree", small_splits)
    before = len(list(fd_dir.iterdir()))
    imagetree._walk(tmp_path / "tree")
    assert len(list(fd_dir.iterdir())) == before


def test_no_fork_when_every_core_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = imagetree.usable_cores()
    monkeypatch.setattr(imagetree, "_running_elsewhere", lambda: cores)
    assert not imagetree._can_fork()
    monkeypatch.setattr(imagetree, "_running_elsewhere", lambda: cores - 1)
    if not (hasattr(os, "fork") and sys.platform.startswith("linux") and cores >= 2):
        pytest.skip("forks only on Linux with two cores or more")
    if threading.active_count() > 1:
        pytest.skip("another thread runs in this test process")
    assert imagetree._can_fork()


def test_tasks_running_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("2.51 1.48 1.49 3/142 14319\n")
    assert imagetree._running_elsewhere(str(tmp_path / "loadavg")) == 2  # not this process
    (tmp_path / "loadavg").write_text("garbled\n")
    assert imagetree._running_elsewhere(str(tmp_path / "loadavg")) == 0
    assert imagetree._running_elsewhere(str(tmp_path / "missing")) == 0


def test_no_fork_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagetree, "_running_elsewhere", lambda: 0)  # only the thread says no
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not imagetree._can_fork()
    finally:
        stop.set()
        other.join()


# ---------------------------------------------------------------- parallel


@pytest.fixture
def pool_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Send trees of 10+ files to worker processes, and record each pool started."""
    started: list[int] = []

    class SpyPool(ProcessPoolExecutor):
        def __init__(self, max_workers: int, mp_context: BaseContext | None = None) -> None:
            started.append(max_workers)
            super().__init__(max_workers, mp_context=mp_context)

    monkeypatch.setattr(imagetree, "ProcessPoolExecutor", SpyPool)
    monkeypatch.setattr(imagetree, "PARALLEL_MIN_FILES", 10)
    return started


def test_parallel_decoding_matches_serial(
    tmp_path: Path, small_splits: Splits, pool_spy: list[int]
) -> None:
    write_image_tree(tmp_path / "tree", small_splits, workers=1)
    assert pool_spy == []
    serial = read_image_tree(tmp_path / "tree", cache=False, workers=1)
    assert pool_spy == []
    parallel = read_image_tree(tmp_path / "tree", cache=False, workers=2)
    assert pool_spy == [2]
    assert_same(parallel, small_splits)
    for split in serial:
        np.testing.assert_array_equal(parallel[split][0], serial[split][0])
        np.testing.assert_array_equal(parallel[split][1], serial[split][1])


def test_parallel_writing_matches_serial(
    tmp_path: Path, small_splits: Splits, pool_spy: list[int]
) -> None:
    write_image_tree(tmp_path / "tree", small_splits, workers=2)
    assert pool_spy == [2]
    assert_same(read_image_tree(tmp_path / "tree", workers=1), small_splits)


def test_parallel_errors_name_the_first_bad_file(tmp_path: Path, pool_spy: list[int]) -> None:
    paths = [save_png(tmp_path / f"{i:02d}.png", np.zeros((4, 4), np.uint8)) for i in range(40)]
    save_png(paths[25], np.zeros((3, 3), np.uint8))  # wrong size, in a late chunk
    paths[31].write_bytes(b"corrupt")  # later still: not the one reported
    with pytest.raises(DataError, match="3x3 pixels but") as caught:
        decode_files(paths, workers=2)
    assert caught.value.source == str(paths[25])
    assert pool_spy == [2]


def test_decode_files_keeps_order(tmp_path: Path) -> None:
    paths = [save_png(tmp_path / f"{i}.png", np.full((2, 3), i, np.uint8)) for i in range(25)]
    images = decode_files(paths, workers=2, min_parallel=5)
    assert images.shape == (25, 2, 3)
    np.testing.assert_array_equal(images[:, 0, 0], np.arange(25))


def test_workers_must_be_positive(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    with pytest.raises(ValueError, match="workers"):
        decode_files(sorted((tmp_path / "t/0").iterdir()), workers=0, min_parallel=1)


# ---------------------------------------------------------------- plain PNG fast path


def _png(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(filtered: np.ndarray, *, extra: bytes = b"") -> bytes:
    """An 8-bit grey PNG holding exactly these filtered scanlines ``(h, 1 + w)``."""
    h, stride = filtered.shape
    header = struct.pack(">IIBBBBB", stride - 1, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png(b"IHDR", header)
        + extra
        + _png(b"IDAT", zlib.compress(filtered.tobytes()))
        + _png(b"IEND", b"")
    )


@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4, "mixed"])
def test_fast_path_matches_pillow_on_every_filter(filter_type: int | str) -> None:
    rng = np.random.default_rng(7)
    # Any bytes are valid filtered data; Paeth and Average are exercised on random values.
    filtered = rng.integers(0, 256, size=(200, 9, 1 + 11), dtype=np.uint8)
    kinds = rng.integers(0, 5, size=(200, 9)) if filter_type == "mixed" else filter_type
    filtered[:, :, 0] = kinds
    files = [crafted_png(image) for image in filtered]
    rows = [imagetree.plain_png_rows(data, 9, 11) for data in files]
    assert all(r is not None for r in rows)
    fast = imagetree.unfilter_png_rows(filtered)
    pillow = np.stack([decode_image(data, "x.png") for data in files])
    np.testing.assert_array_equal(fast, pillow)


def test_fast_path_is_used_for_plain_grey_pngs(tmp_path: Path, small_splits: Splits) -> None:
    write_image_tree(tmp_path / "tree", small_splits)
    data = next((tmp_path / "tree").rglob("*.png")).read_bytes()
    assert imagetree.plain_png_rows(data, 28, 28) is not None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: encode(Image.new("RGB", (4, 3))), id="rgb"),
        pytest.param(lambda: encode(Image.new("I;16", (4, 3))), id="16-bit"),
        pytest.param(lambda: encode(Image.new("L", (4, 3)), "BMP"), id="bmp"),
        pytest.param(lambda: encode(Image.new("L", (5, 3))), id="other-size"),
        pytest.param(lambda: encode(Image.new("L", (4, 3)))[:-20], id="truncated"),
        pytest.param(lambda: _flip_byte(encode(Image.new("L", (4, 3))), 30), id="bad-crc"),
        pytest.param(lambda: crafted_png(np.full((3, 5), 9, np.uint8)), id="bad-filter-type"),
        pytest.param(
            lambda: crafted_png(np.zeros((3, 5), np.uint8), extra=_png(b"PLTE", bytes(3))),
            id="critical-chunk",
        ),
    ],
)
def test_fast_path_leaves_everything_else_to_pillow(make: object) -> None:
    assert imagetree.plain_png_rows(make(), 3, 4) is None  # type: ignore[operator]


def _flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def test_fast_path_skips_ancillary_chunks(tmp_path: Path) -> None:
    filtered = np.zeros((3, 5), np.uint8)
    filtered[:, 1:] = 77
    data = crafted_png(filtered, extra=_png(b"tEXt", b"Comment\0hello"))
    assert imagetree.plain_png_rows(data, 3, 4) is not None
    (tmp_path / "a.png").write_bytes(data)
    np.testing.assert_array_equal(decode_files([tmp_path / "a.png"]), np.full((1, 3, 4), 77))


def test_tree_mixing_plain_and_colour_pngs(tmp_path: Path) -> None:
    save_png(tmp_path / "t/0/a_1.png", np.full((2, 2), 5, np.uint8))
    save_png(tmp_path / "t/0/a_2.png", Image.new("RGB", (2, 2), (255, 0, 0)))
    save_png(tmp_path / "t/0/a_3.png", np.full((2, 2), 6, np.uint8))
    (tmp_path / "t/1").mkdir()
    Image.new("L", (2, 2), 8).save(tmp_path / "t/1/b.bmp")
    images, labels = read_image_tree(tmp_path / "t")["train"]
    np.testing.assert_array_equal(images[:, 0, 0], [5, 76, 6, 8])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1])


def test_empty_image_file_is_corrupt(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    (tmp_path / "t/1/img_5.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"img_5\.png: truncated or corrupt image"):
        read_image_tree(tmp_path / "t")


def test_float_image_out_of_range_keeps_its_own_message() -> None:
    image = Image.fromarray(np.array([[0.0, 300.0]], dtype=np.float32))
    with pytest.raises(DataError, match=r"outside 0\.\.255") as caught:
        decode_image(encode(image, "TIFF"), "f.tif")
    assert "corrupt" not in str(caught.value)


def test_bad_checksum_is_an_error(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    bad = tmp_path / "t/0/img_1.png"
    bad.write_bytes(_flip_byte(bad.read_bytes(), 30))  # the header chunk's CRC
    # Pillow says only "cannot identify image file"; the message says what is damaged.
    with pytest.raises(DataError, match="damaged PNG: CRC mismatch in IHDR") as caught:
        read_image_tree(tmp_path / "t")
    assert caught.value.source == str(bad)


# ---------------------------------------------------------------- hostile input (issue 12)


def test_class_folder_far_above_the_largest_label(tmp_path: Path) -> None:
    tiny_tree(tmp_path / "t")
    save_png(tmp_path / "t/999999999/a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="'999999999' is label 999999999, too large for a class"):
        read_image_tree(tmp_path / "t")


def test_class_folders_up_to_the_largest_label_read(tmp_path: Path) -> None:
    for label in (0, imagetree.MAX_LABEL):
        save_png(tmp_path / f"t/{label}/a.png", np.zeros((4, 4), np.uint8))
    labels = read_image_tree(tmp_path / "t")["train"][1]
    np.testing.assert_array_equal(labels, [0, imagetree.MAX_LABEL])


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, limited_run, zero_png) -> dict[str, str]:
    """What loading each hostile tree did, in a process limited to 1 GiB (one process for all).

    Each tree holds 28x28 digits and one crafted PNG of a few hundred kilobytes:
    "other-size" and "first" a 9,400 x 9,400 RGBA image (1.9 GB on its way to
    grey) after or before the digits; "idat" a 28x28 grey PNG whose data
    unpacks to 1 GiB; "device" a symlink to /dev/zero.
    """
    root = tmp_path_factory.mktemp("hostile")
    digit = np.zeros((28, 28), np.uint8)
    trees = {"other-size": ("b.png", zero_png(9400, 9400)),
             "first": ("0.png", zero_png(9400, 9400)),
             "idat": ("b.png", zero_png(28, 28, channels=1, idat_bytes=1 << 30))}  # fmt: skip
    for name, (bad, data) in trees.items():
        save_png(root / name / "0/a.png", digit)
        save_png(root / name / "1/c.png", digit)
        (root / name / "0" / bad).write_bytes(data)
    if Path("/dev/zero").exists():
        save_png(root / "device/0/a.png", digit)
        (root / "device/0/b.png").symlink_to("/dev/zero")
        trees["device"] = ("b.png", b"")
    outcomes = limited_run(*(
        "from digitlab.data.imagetree import read_image_tree\n"
        f"splits = read_image_tree({str(root / name)!r}, cache=False, workers=1)\n"
        "assert splits['train'][0].shape == (3, 28, 28)"
        for name in trees
    ))  # fmt: skip
    assert len(outcomes) == len(trees), outcomes
    return dict(zip(trees, outcomes, strict=True))


def test_tree_image_of_another_size_is_refused_from_its_header(bounded: dict[str, str]) -> None:
    outcome = bounded["other-size"]
    assert outcome.startswith("DataError:"), outcome
    assert "b.png: image is 9400x9400 pixels but" in outcome
    assert "a.png is 28x28; all must match" in outcome


def test_huge_first_image_of_a_tree_is_refused_from_its_header(bounded: dict[str, str]) -> None:
    outcome = bounded["first"]
    assert outcome.startswith("DataError:"), outcome
    assert f"0.png: image is too large (9400x9400 pixels, more than {imagetree.MAX_PIXELS:,})" in outcome


def test_plain_png_whose_data_unpacks_to_a_gibibyte_reads_in_bounds(bounded: dict[str, str]) -> None:
    # The fast path inflates no more than 28x28 needs, then leaves the file to
    # Pillow, which reads the image and ignores the rest.
    assert bounded["idat"] == "returned"


def test_tree_image_linked_to_a_device_is_refused_unread(bounded: dict[str, str]) -> None:
    if "device" not in bounded:
        pytest.skip("needs /dev/zero")
    outcome = bounded["device"]
    assert outcome.startswith("DataError:"), outcome
    assert "b.png: is a character device, not a regular file" in outcome


def test_tree_larger_than_the_data_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_tree(tmp_path / "t")  # four 4x4 images: 64 bytes
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 63)
    with pytest.raises(DataError, match=r"4 images of 4x4 pixels .* would take 64 bytes, more than the 63"):
        read_image_tree(tmp_path / "t", cache=False)
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 64)
    assert read_image_tree(tmp_path / "t", cache=False)["train"][0].shape == (4, 4, 4)


def test_damaged_jpeg_header_is_named() -> None:
    with pytest.raises(DataError, match=r"a\.jpg: damaged JPEG file: its header cannot be read"):
        decode_image(b"\xff\xd8\xff\xc0\x00\x02garbage", "a.jpg")


def test_a_user_pictures_plain_grey_png_keeps_only_chunks_that_change_nothing() -> None:
    """predict decodes plain grey PNGs in batches (preprocess.plain_grey_png): the same
    pixels as decode_user_image, on every filter, and only when no chunk could turn or
    otherwise change the picture (EXIF orientation in eXIf or in a text chunk)."""
    from digitlab.data.preprocess import decode_grey_pngs, decode_user_image, plain_grey_png

    rng = np.random.default_rng(3)
    filtered = rng.integers(0, 256, size=(50, 9, 1 + 11), dtype=np.uint8)
    filtered[:, :, 0] = rng.integers(0, 5, size=(50, 9))
    files = [crafted_png(image, extra=_png(b"pHYs", struct.pack(">IIB", 1, 1, 0)))
             for image in filtered]
    plain = [plain_grey_png(data) for data in files]
    assert all(p is not None and p[0] == (9, 11) for p in plain)
    np.testing.assert_array_equal(
        decode_grey_pngs((9, 11), [p[1] for p in plain if p is not None]),
        np.stack([decode_user_image(data) for data in files]),
    )
    image = np.zeros((3, 5), np.uint8)
    for chunk in (_png(b"eXIf", b"MM\0*"), _png(b"tEXt", b"Raw profile type exif\0x")):
        assert plain_grey_png(crafted_png(image, extra=chunk)) is None
    assert plain_grey_png(encode(Image.new("RGB", (4, 3)))) is None
    assert plain_grey_png(b"not a png") is None
