"""Decoded-array cache for image trees (and gzipped IDX folders): a second load of unchanged files is near instant.

An entry is an uncompressed ``.npz`` (``train_images``, ``train_labels`` and,
when the tree has one, ``test_images``, ``test_labels``) named by a key:
SHA-256 over the tree's resolved path and the sorted ``(relative path, size,
mtime_ns)`` of every file in it, so adding, removing, renaming or modifying
any file gives a new key. The Pillow version and a format version are hashed
in too, since a new decoder may decode (JPEG) differently.

The cache lives in ``$DIGITLAB_CACHE`` when that is set, else in
``pooch.os_cache("digitlab") / "trees"``. A corrupt or unreadable entry is
deleted and ignored (the tree is decoded again), never an error; a cache that
cannot be written costs speed only, and says so with a
:class:`~digitlab.errors.DataWarning`. Storing a new entry for a tree removes
that tree's older entries, so an edited tree does not fill the disk.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL

from digitlab.atomic import atomic_file
from digitlab.data.formats import Splits, check_pair
from digitlab.errors import DataWarning

ENV_VAR = "DIGITLAB_CACHE"
# Bump when the decoding rule or the entry layout changes: old entries then miss.
FORMAT_VERSION = 1
SPLITS = ("train", "test")


def cache_dir() -> Path:
    """The folder holding cache entries: ``$DIGITLAB_CACHE`` or the user cache."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    from digitlab.data.download import _pooch  # only needed when no folder is configured

    return Path(_pooch().os_cache("digitlab")) / "trees"


def tree_key(
    root: str | Path, paths: Sequence[str], sizes: Sequence[int], mtimes: Sequence[int]
) -> str:
    """The key of a tree's current contents.

    Parameters
    ----------
    root : str or Path
        The tree's top folder; its resolved path is part of the key.
    paths, sizes, mtimes : sequences of the same length
        Relative path, size in bytes and ``st_mtime_ns`` of every file in the
        tree, in any order.

    Returns
    -------
    key : str
        64 hex digits.
    """
    digest = hashlib.sha256()
    digest.update(f"digitlab-tree-cache {FORMAT_VERSION} pillow {PIL.__version__}\0".encode())
    digest.update(os.fsencode(Path(root).resolve()) + b"\0")
    # Sort once, then hash three whole buffers: a cached load of 70,000 files
    # must not spend more here than it spends reading the arrays.
    order = sorted(range(len(paths)), key=paths.__getitem__)
    digest.update("\0".join([paths[i] for i in order]).encode("utf-8", "surrogateescape"))
    index = np.array(order, dtype=np.intp)
    digest.update(b"\0" + np.asarray(sizes, dtype=np.int64)[index].tobytes())
    digest.update(b"\0" + np.asarray(mtimes, dtype=np.int64)[index].tobytes())
    return digest.hexdigest()


def entry_path(root: str | Path, key: str) -> Path:
    """Where the entry for ``key`` of the tree at ``root`` is stored."""
    return cache_dir() / f"{_root_tag(root)}-{key}.npz"


def _root_tag(root: str | Path) -> str:
    # Entries of one tree share this prefix, so older ones can be found and removed.
    return hashlib.sha256(os.fsencode(Path(root).resolve())).hexdigest()[:16]


def load(root: str | Path, key: str) -> Splits | None:
    """The cached splits for ``key``, or None when absent or unreadable.

    A corrupt entry is deleted so that the next store replaces it cleanly.
    """
    path = entry_path(root, key)
    if not path.is_file():
        return None
    try:
        return _read_entry(path)
    except Exception:  # any damage at all means "decode again", never an error
        path.unlink(missing_ok=True)
        return None


def _read_entry(path: Path) -> Splits:
    splits: Splits = {}
    # Our own handle: np.load(path) leaves its handle open when the zip is damaged.
    with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
        for split in SPLITS:
            if f"{split}_images" in archive.files:
                images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
                splits[split] = check_pair(images, labels, path)
    if "train" not in splits:
        raise ValueError(f"{path}: no train split")
    return splits


def store(root: str | Path, key: str, splits: Splits) -> None:
    """Store ``splits`` under ``key``, atomically, and drop the tree's older entries."""
    path = entry_path(root, key)
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    try:
        with atomic_file(path) as tmp, tmp.open("wb") as handle:
            # Uncompressed: a reload is then a plain read, no inflating 55 MB.
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        for old in path.parent.glob(f"{_root_tag(root)}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(
            f"{path.parent}: cannot write the image-tree cache ({exc.strerror or exc}); "
            f"set {ENV_VAR} to a writable folder to make reloads fast",
            DataWarning,
            stacklevel=3,
        )
