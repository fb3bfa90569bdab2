"""Decoded-array cache for image trees (and gzipped IDX folders): a second load of unchanged files is near instant.

An entry is an uncompressed ``.npz`` (``train_images``, ``train_labels`` and,
when the tree has one, ``test_images``, ``test_labels``) named by a key:
SHA-256 over the tree's resolved path and the sorted ``(relative path, size,
mtime_ns)`` of every file in it, so adding, removing, renaming or modifying
any file gives a new key. The Pillow version and a format version are hashed
in too, since a new decoder may decode (JPEG) differently.

An image tree's entry also holds the listing it was decoded from (every
file's relative path, size and mtime_ns, and the same header the key hashes),
so that a reload can read the entry while it is still listing the tree, and
then use it only when the two listings are equal, file for file (:func:`find`,
:meth:`Entry.matches`): as strict as comparing keys, without hashing or
sorting 70,000 paths on every load.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from digitlab.atomic import atomic_file
from digitlab.data.formats import Splits, check_pair
from digitlab.errors import DataWarning

ENV_VAR = "DIGITLAB_CACHE"
# Bump when the decoding rule or the entry layout changes: old entries then miss.
# 2: an image tree's entry holds its listing (LISTING_ARRAYS).
FORMAT_VERSION = 2
SPLITS = ("train", "test")
# An image tree's listing, in an entry: the header (as hashed into the key), the
# relative paths joined by NUL (UTF-8 bytes), and sizes and mtimes as int64 (2, n).
LISTING_ARRAYS = ("listing_header", "listing_paths", "listing_stats")
Listing = tuple[Sequence[str], "Sequence[int] | np.ndarray", "Sequence[int] | np.ndarray"]
"""``(paths, sizes, mtimes)``: relative path, size and ``st_mtime_ns`` of every file."""


def cache_dir() -> Path:
    """The folder holding cache entries: ``$DIGITLAB_CACHE`` or the user cache."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    from digitlab.data.download import _pooch  # only needed when no folder is configured

    return Path(_pooch().os_cache("digitlab")) / "trees"


def tree_key(
    root: str | Path,
    paths: Sequence[str],
    sizes: Sequence[int] | np.ndarray,
    mtimes: Sequence[int] | np.ndarray,
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
    digest = hashlib.sha256(_header(root))
    # Sort once, then hash three whole buffers.
    blob, stats = _sorted_listing(paths, sizes, mtimes)
    digest.update(blob)
    digest.update(b"\0" + stats[0].tobytes())
    digest.update(b"\0" + stats[1].tobytes())
    return digest.hexdigest()


def _header(root: str | Path) -> bytes:
    """What besides the files decides an entry: format and Pillow versions, resolved root."""
    version = f"digitlab-tree-cache {FORMAT_VERSION} pillow {PIL.__version__}\0".encode()
    return version + os.fsencode(Path(root).resolve()) + b"\0"


def _join_paths(paths: Sequence[str]) -> bytes:
    return "\0".join(paths).encode("utf-8", "surrogateescape")


def _stats(sizes: Sequence[int] | np.ndarray, mtimes: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(sizes, dtype=np.int64), np.asarray(mtimes, dtype=np.int64)])


def _sorted_listing(
    paths: Sequence[str], sizes: Sequence[int] | np.ndarray, mtimes: Sequence[int] | np.ndarray
) -> tuple[bytes, np.ndarray]:
    """A listing in path order, whatever order it came in: joined paths, int64 (2, n) stats."""
    order = sorted(range(len(paths)), key=paths.__getitem__)
    stats = _stats(sizes, mtimes)
    if len(paths) != stats.shape[1]:
        raise ValueError(f"{len(paths)} paths but {stats.shape[1]} sizes or mtimes")
    return _join_paths([paths[i] for i in order]), stats[:, np.array(order, dtype=np.intp)]


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
    return _read_arrays(path)[0]


def _read_arrays(path: Path) -> tuple[Splits, dict[str, np.ndarray]]:
    """An entry's splits, and its listing arrays (those it holds of LISTING_ARRAYS)."""
    splits: Splits = {}
    # Our own handle: np.load(path) leaves its handle open when the zip is damaged.
    with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
        for split in SPLITS:
            if f"{split}_images" in archive.files:
                images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
                splits[split] = check_pair(images, labels, path)
        listing = {name: archive[name] for name in LISTING_ARRAYS if name in archive.files}
    if "train" not in splits:
        raise ValueError(f"{path}: no train split")
    return splits, listing


@dataclass
class Entry:
    """An image tree's entry as read by :func:`find`: its splits, and the listing they
    were decoded from."""

    splits: Splits
    header: bytes
    paths: bytes  # relative paths joined by NUL, UTF-8
    stats: np.ndarray  # int64 (2, n): sizes, then mtime_ns

    def matches(
        self,
        root: str | Path,
        paths: Sequence[str],
        sizes: Sequence[int] | np.ndarray,
        mtimes: Sequence[int] | np.ndarray,
    ) -> bool:
        """Whether the tree at ``root`` now holds exactly the files this entry was made
        from, each with the same size and mtime_ns: the key's test, file for file.

        Listings are compared in the order given first (an unchanged folder lists its
        files in the same order each time), and sorted only when that order differs.
        """
        stats = _stats(sizes, mtimes)
        if self.header != _header(root) or stats.shape != self.stats.shape:
            return False
        if _join_paths(paths) == self.paths and np.array_equal(stats, self.stats):
            return True
        stored = self.paths.decode("utf-8", "surrogateescape").split("\0") if self.paths else []
        if len(stored) != len(paths):
            return False
        blob, ordered = _sorted_listing(paths, stats[0], stats[1])
        stored_blob, stored_ordered = _sorted_listing(stored, self.stats[0], self.stats[1])
        return blob == stored_blob and np.array_equal(ordered, stored_ordered)


def find(root: str | Path) -> Entry | None:
    """The entry stored for the tree at ``root`` with its listing (see :func:`store`),
    whatever files it was made from; None when there is none, or it cannot be read.

    Read before the tree's listing is complete, so the two can overlap; the caller
    uses it only when :meth:`Entry.matches` the listing. A damaged entry is deleted.
    """
    folder = cache_dir()
    prefix = f"{_root_tag(root)}-"
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.name.startswith(prefix)
                           and e.name.endswith(".npz"))
    except OSError:
        return None
    for name in names:  # one, unless two processes stored at once
        path = folder / name
        try:
            splits, listing = _read_arrays(path)
        except Exception:  # any damage at all means "decode again", never an error
            path.unlink(missing_ok=True)
            continue
        if listing.keys() != set(LISTING_ARRAYS):
            continue  # stored without its listing (an IDX folder's entry): a miss
        stats = listing["listing_stats"]
        if stats.dtype != np.int64 or stats.ndim != 2 or stats.shape[0] != 2:
            path.unlink(missing_ok=True)
            continue
        return Entry(splits, listing["listing_header"].tobytes(),
                     listing["listing_paths"].tobytes(), stats)
    return None


def store(root: str | Path, key: str, splits: Splits, listing: Listing | None = None) -> None:
    """Store ``splits`` under ``key``, atomically, and drop the tree's older entries.

    ``listing``: the ``(paths, sizes, mtimes)`` ``key`` was made from, stored in the
    entry for :func:`find` (an image tree's).
    """
    path = entry_path(root, key)
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    if listing is not None:
        paths, sizes, mtimes = listing
        arrays["listing_header"] = np.frombuffer(_header(root), dtype=np.uint8)
        arrays["listing_paths"] = np.frombuffer(_join_paths(paths), dtype=np.uint8)
        arrays["listing_stats"] = _stats(sizes, mtimes)
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
