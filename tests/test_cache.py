"""The decoded-array cache of image trees: hits, invalidation, damage, bypass."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data import cache, imagetree
from digitlab.data.imagetree import read_image_tree, write_image_tree
from digitlab.errors import DataError, DataWarning

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


@pytest.fixture(autouse=True, params=["serial", "forked"])
def stat_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the walk's stat calls made here, and shared with a forked child
    (as for a tree of PARALLEL_STAT_MIN_FILES files or more), so that every hit and every
    invalidation holds both ways."""
    if request.param == "forked":
        if not hasattr(os, "fork"):
            pytest.skip("needs fork")
        monkeypatch.setattr(imagetree, "PARALLEL_STAT_MIN_FILES", 0)
        # Forced even if a test runner's thread is running: the child only stats files.
        monkeypatch.setattr(imagetree, "_can_fork", lambda: True)
    else:
        monkeypatch.setattr(imagetree, "PARALLEL_STAT_MIN_FILES", 1 << 62)
    return str(request.param)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DIGITLAB_CACHE", str(folder))
    return folder


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image file read for decoding from here on (serial, so in this process)."""
    seen: list[str] = []
    original: Callable[[str], bytes] = imagetree._read

    def counting(path: str) -> bytes:
        seen.append(path)
        return original(path)

    monkeypatch.setattr(imagetree, "_read", counting)
    return seen


@pytest.fixture
def tree(tmp_path: Path, small_splits: Splits) -> Path:
    root = tmp_path / "tree"
    write_image_tree(root, small_splits)
    return root


def load(root: Path) -> Splits:
    return read_image_tree(root, workers=1)


def assert_equal_splits(a: Splits, b: Splits) -> None:
    assert a.keys() == b.keys()
    for split in a:
        np.testing.assert_array_equal(a[split][0], b[split][0])
        np.testing.assert_array_equal(a[split][1], b[split][1])
        assert a[split][0].dtype == np.uint8
        assert a[split][1].dtype == np.int64


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.npz"))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


# ---------------------------------------------------------------- hits


def test_second_load_decodes_nothing(tree: Path, cache_dir: Path, decoded: list[str]) -> None:
    first = load(tree)
    n_files = sum(len(labels) for _, labels in first.values())
    assert len(decoded) >= n_files
    assert len(entries(cache_dir)) == 1
    decoded.clear()
    second = load(tree)
    assert decoded == []
    assert_equal_splits(first, second)


def test_cache_false_bypasses_the_cache(tree: Path, cache_dir: Path, decoded: list[str]) -> None:
    read_image_tree(tree, cache=False, workers=1)
    assert entries(cache_dir) == []
    load(tree)
    decoded.clear()
    read_image_tree(tree, cache=False, workers=1)
    assert decoded != []


def test_stray_warning_repeats_on_a_cache_hit(
    tree: Path, cache_dir: Path, decoded: list[str]
) -> None:
    (tree / "train/0/.DS_Store").write_bytes(b"x")
    with pytest.warns(DataWarning, match="DS_Store"):
        load(tree)
    decoded.clear()
    with pytest.warns(DataWarning, match="DS_Store"):
        load(tree)
    assert decoded == []


def test_layout_errors_are_not_hidden_by_the_cache(tree: Path, cache_dir: Path) -> None:
    load(tree)
    (tree / "train/9").rename(tree / "train/nine")
    with pytest.raises(DataError, match="folder name 'nine' is not a label"):
        load(tree)


# ---------------------------------------------------------------- invalidation


def test_modified_file_invalidates(tree: Path, cache_dir: Path, decoded: list[str]) -> None:
    before = load(tree)
    target = min((tree / "train/0").iterdir())
    Image.fromarray(np.full((28, 28), 123, np.uint8)).save(target)
    bump_mtime(target)
    decoded.clear()
    after = load(tree)
    assert str(target) in decoded
    changed = np.flatnonzero((after["train"][0] != before["train"][0]).any(axis=(1, 2)))
    assert len(changed) == 1
    assert (after["train"][0][changed[0]] == 123).all()


def test_same_size_rewrite_invalidates(tree: Path, cache_dir: Path, decoded: list[str]) -> None:
    before = load(tree)
    pngs = sorted((tree / "train").rglob("*.png"))
    by_size: dict[int, list[Path]] = {}
    for path in pngs:
        by_size.setdefault(path.stat().st_size, []).append(path)
    same = next(group for group in by_size.values() if len(group) > 1 and
                group[0].read_bytes() != group[1].read_bytes())
    target, source = same[0], same[1]
    target.write_bytes(source.read_bytes())  # another digit, of the very same byte count
    bump_mtime(target)  # as a coarse-clock file system might not
    decoded.clear()
    after = load(tree)
    assert str(target) in decoded
    changed = np.flatnonzero((after["train"][0] != before["train"][0]).any(axis=(1, 2)))
    assert len(changed) == 1


def test_touching_a_file_invalidates(tree: Path, cache_dir: Path, decoded: list[str]) -> None:
    load(tree)
    bump_mtime(next((tree / "test").rglob("*.png")))
    decoded.clear()
    load(tree)
    assert decoded != []


def test_added_file_invalidates(tree: Path, cache_dir: Path, decoded: list[str]) -> None:
    before = load(tree)
    folder = next((tree / "test").iterdir())
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(folder / "extra.png")
    decoded.clear()
    after = load(tree)
    assert decoded != []
    assert len(after["test"][1]) == len(before["test"][1]) + 1
    assert len(after["train"][1]) == len(before["train"][1])


def test_removed_file_invalidates(tree: Path, cache_dir: Path) -> None:
    before = load(tree)
    next((tree / "train").rglob("*.png")).unlink()
    assert len(load(tree)["train"][1]) == len(before["train"][1]) - 1


def test_renamed_file_invalidates(tree: Path, cache_dir: Path) -> None:
    before = load(tree)
    moved = next((tree / "train/1").glob("*.png"))
    moved.rename(tree / "train/2" / moved.name)  # keeps size and mtime: only the path changes
    after = load(tree)
    labels_before = np.bincount(before["train"][1], minlength=10)
    labels_after = np.bincount(after["train"][1], minlength=10)
    assert labels_after[1] == labels_before[1] - 1
    assert labels_after[2] == labels_before[2] + 1


def test_renamed_file_within_its_folder_invalidates(tree: Path, cache_dir: Path) -> None:
    before = load(tree)
    folder = max((tree / "train").iterdir(), key=lambda f: len(list(f.iterdir())))
    first = min(folder.iterdir(), key=lambda p: imagetree.natural_key(p.name))
    first.rename(folder / "train_image_99999.png")  # same class, size and mtime: a new order
    after = load(tree)
    np.testing.assert_array_equal(after["train"][1], before["train"][1])
    assert not np.array_equal(after["train"][0], before["train"][0])


def test_new_entry_replaces_the_old_one(tree: Path, cache_dir: Path) -> None:
    load(tree)
    old = entries(cache_dir)
    bump_mtime(next(tree.rglob("*.png")))
    load(tree)
    new = entries(cache_dir)
    assert len(new) == 1
    assert new != old


def test_trees_do_not_share_entries(tmp_path: Path, small_splits: Splits, cache_dir: Path) -> None:
    write_image_tree(tmp_path / "a", small_splits)
    write_image_tree(tmp_path / "b", {"train": small_splits["test"]})
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert len(entries(cache_dir)) == 2
    assert_equal_splits(load(tmp_path / "a"), a)
    assert_equal_splits(load(tmp_path / "b"), b)


# ---------------------------------------------------------------- damage


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not a zip at all"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:200]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(
            lambda p: write_npz(p, train_images=np.zeros(3), train_labels=np.zeros(2)),
            id="wrong-arrays",
        ),
    ],
)
def test_damaged_entry_is_rebuilt(
    tree: Path, cache_dir: Path, decoded: list[str], damage: Callable[[Path], object]
) -> None:
    good = load(tree)
    (entry,) = entries(cache_dir)
    damage(entry)
    decoded.clear()
    rebuilt = load(tree)
    assert decoded != []
    assert_equal_splits(rebuilt, good)
    decoded.clear()
    assert_equal_splits(load(tree), good)  # and the rebuilt entry serves the next load
    assert decoded == []


def test_unwritable_cache_warns_and_still_loads(
    tmp_path: Path, tree: Path, small_splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DIGITLAB_CACHE", str(blocker / "cache"))
    with pytest.warns(DataWarning, match="cannot write the image-tree cache"):
        got = load(tree)
    assert got.keys() == small_splits.keys()


# ---------------------------------------------------------------- key and location


def test_key_ignores_listing_order_and_sees_every_field(tmp_path: Path) -> None:
    paths, sizes, mtimes = ["a/1.png", "a/2.png", "b/1.png"], [10, 20, 30], [1, 2, 3]
    key = cache.tree_key(tmp_path, paths, sizes, mtimes)
    assert cache.tree_key(tmp_path, paths[::-1], sizes[::-1], mtimes[::-1]) == key
    assert cache.tree_key(tmp_path, ["a/1.png", "a/3.png", "b/1.png"], sizes, mtimes) != key
    assert cache.tree_key(tmp_path, paths, [10, 21, 30], mtimes) != key
    assert cache.tree_key(tmp_path, paths, sizes, [1, 2, 4]) != key
    assert cache.tree_key(tmp_path / "elsewhere", paths, sizes, mtimes) != key
    assert len(key) == 64


def test_entry_matches_its_listing_only(tmp_path: Path, cache_dir: Path) -> None:
    paths, sizes, mtimes = ["a/1.png", "a/2.png", "b/1.png"], [10, 20, 30], [1, 2, 3]
    splits = {"train": (np.zeros((3, 2, 2), np.uint8), np.arange(3, dtype=np.int64))}
    cache.store(tmp_path, cache.tree_key(tmp_path, paths, sizes, mtimes), splits,
                (paths, sizes, mtimes))
    entry = cache.find(tmp_path)
    assert entry is not None
    assert_equal_splits(entry.splits, splits)
    assert entry.matches(tmp_path, paths, sizes, mtimes)
    assert entry.matches(tmp_path, paths[::-1], sizes[::-1], mtimes[::-1])  # listed in another order
    assert entry.matches(tmp_path, paths, np.array(sizes), np.array(mtimes))
    assert not entry.matches(tmp_path, ["a/1.png", "a/3.png", "b/1.png"], sizes, mtimes)
    assert not entry.matches(tmp_path, ["a/2.png", "a/1.png", "b/1.png"], sizes, mtimes)
    assert not entry.matches(tmp_path, paths, [10, 21, 30], mtimes)
    assert not entry.matches(tmp_path, paths, sizes, [1, 2, 4])
    assert not entry.matches(tmp_path, paths[:2], sizes[:2], mtimes[:2])
    assert not entry.matches(tmp_path, [*paths, "b/2.png"], [*sizes, 40], [*mtimes, 4])
    assert not entry.matches(tmp_path / "elsewhere", paths, sizes, mtimes)
    assert cache.find(tmp_path / "elsewhere") is None


def test_entry_header_holds_the_versions(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = (["a/1.png"], [10], [1])
    splits = {"train": (np.zeros((1, 2, 2), np.uint8), np.zeros(1, dtype=np.int64))}
    cache.store(tmp_path, cache.tree_key(tmp_path, *listing), splits, listing)
    monkeypatch.setattr(cache, "FORMAT_VERSION", cache.FORMAT_VERSION + 1)
    entry = cache.find(tmp_path)
    assert entry is not None
    assert not entry.matches(tmp_path, *listing)
    monkeypatch.setattr(cache, "FORMAT_VERSION", cache.FORMAT_VERSION - 1)
    monkeypatch.setattr(cache.PIL, "__version__", "0.0.0")
    assert not entry.matches(tmp_path, *listing)


def test_entry_without_listing_is_not_found(tmp_path: Path, cache_dir: Path) -> None:
    splits = {"train": (np.zeros((1, 2, 2), np.uint8), np.zeros(1, dtype=np.int64))}
    cache.store(tmp_path, "0" * 64, splits)  # as an IDX folder's entry is stored
    assert cache.find(tmp_path) is None
    assert cache.load(tmp_path, "0" * 64) is not None


def test_damaged_listing_is_deleted(tmp_path: Path, cache_dir: Path) -> None:
    cache_dir.mkdir()
    write_npz(cache.entry_path(tmp_path, "0" * 64),
              train_images=np.zeros((1, 2, 2), np.uint8), train_labels=np.zeros(1, np.int64),
              listing_header=np.zeros(3, np.uint8), listing_paths=np.zeros(3, np.uint8),
              listing_stats=np.zeros(3, np.float64))
    assert cache.find(tmp_path) is None
    assert entries(cache_dir) == []


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITLAB_CACHE", str(tmp_path / "here"))
    assert cache.cache_dir() == tmp_path / "here"


def test_default_cache_dir_is_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    monkeypatch.delenv("DIGITLAB_CACHE", raising=False)
    assert cache.cache_dir() == Path(pooch.os_cache("digitlab")) / "trees"
