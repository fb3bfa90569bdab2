"""Time digitlab's image-tree loading against a plain per-file Pillow loop.

Writes the 70,000 Fashion-MNIST images (Debian's dataset-fashion-mnist, read
from /usr/share/datasets/fashion-mnist) as a PNG tree in the Kaggle layout,
reusing the tree when an earlier run wrote it, then times in one run:

1. the reference: a straightforward loop over the sorted files,
   ``np.asarray(Image.open(p).convert("L"))`` in a ``with`` block, stacked;
2. digitlab's first load, with an empty cache;
3. digitlab's cached reload (the median of five, as one is under a second).

All three must give identical arrays. Targets (issue 17): first load at least
3x faster than the reference, cached reload at least 20x, on every machine.

    python benchmarks/bench_load.py              # all 70,000 images
    python benchmarks/bench_load.py --n 5000     # a quick run
    python benchmarks/bench_load.py --quick      # the same: 5,000 images
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from PIL import Image

from digitlab.data.formats import read_idx_folder
from digitlab.data.imagetree import read_image_tree, write_image_tree

FASHION = Path("/usr/share/datasets/fashion-mnist")
TARGETS = {"first load": 3.0, "cached reload": 20.0}
CACHED_REPEATS = 5
QUICK_N = 5_000
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def reference_load(root: Path) -> Splits:
    """The plain loop a user would write: sorted folders, one Pillow open per file."""
    splits: Splits = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label_dir in sorted((root / split).iterdir(), key=lambda p: int(p.name)):
            for path in sorted(label_dir.iterdir(), key=file_number):
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("L")))
                labels.append(int(label_dir.name))
        splits[split] = (np.stack(images), np.array(labels, dtype=np.int64))
    return splits


def file_number(path: Path) -> int:
    """``train_image_12.png`` -> 12: the written order, as digitlab's natural sort gives it."""
    return int(path.stem.rsplit("_", 1)[1])


def source_splits(n: int) -> Splits:
    """``n`` Fashion-MNIST images, 6 train to 1 test as in the full set (60,000 / 10,000)."""
    full = read_idx_folder(FASHION)
    n_train = min(round(n * 6 / 7), len(full["train"][1]))
    n_test = min(n - n_train, len(full["test"][1]))
    return {
        "train": (full["train"][0][:n_train], full["train"][1][:n_train]),
        "test": (full["test"][0][:n_test], full["test"][1][:n_test]),
    }


def ensure_tree(workdir: Path, n: int) -> Path:
    """The PNG tree of ``n`` images, written once and reused by later runs."""
    root = workdir / f"fashion-mnist-png-{n}"
    if root.is_dir():
        print(f"reusing {root}")
        return root
    print(f"writing {n:,} PNGs to {root} ...", flush=True)
    start = time.perf_counter()
    write_image_tree(root, source_splits(n))
    print(f"  written in {time.perf_counter() - start:.1f} s")
    return root


def timed(label: str, load: Callable[[], Splits], repeats: int = 1) -> tuple[float, Splits]:
    """Seconds ``load`` takes (the median of ``repeats`` runs) and what it returned."""
    print(f"{label} ...", end=" ", flush=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = load()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    runs = f" (median of {repeats}: {', '.join(f'{t:.2f}' for t in times)})" if repeats > 1 else ""
    print(f"{seconds:.2f} s{runs}")
    return seconds, result


def check_identical(name: str, got: Splits, want: Splits) -> None:
    assert got.keys() == want.keys(), f"{name}: splits {sorted(got)} != {sorted(want)}"
    for split in want:
        assert np.array_equal(got[split][0], want[split][0]), f"{name}: {split} images differ"
        assert np.array_equal(got[split][1], want[split][1]), f"{name}: {split} labels differ"
        assert got[split][0].dtype == np.uint8, f"{name}: {split} images are not uint8"
        assert got[split][1].dtype == np.int64, f"{name}: {split} labels are not int64"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=70_000, help="images in the tree (default: 70000)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "digitlab-bench",
        help="where the PNG tree is written and kept (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a quick run: {QUICK_N:,} images (overrides --n)"
    )
    args = parser.parse_args()
    root = ensure_tree(args.workdir, QUICK_N if args.quick else args.n)
    with tempfile.TemporaryDirectory(prefix="digitlab-cache-") as cache:
        os.environ["DIGITLAB_CACHE"] = cache  # cold: a fresh, empty cache
        ref_s, ref = timed("reference Pillow loop", lambda: reference_load(root))
        first_s, first = timed("digitlab first load", lambda: read_image_tree(root))
        # A sub-second timing on a shared machine is noisy: take the median of a few.
        cached_s, cached = timed(
            "digitlab cached reload", lambda: read_image_tree(root), repeats=CACHED_REPEATS
        )
    check_identical("first load", first, ref)
    check_identical("cached reload", cached, ref)
    n_images = sum(len(labels) for _, labels in ref.values())
    # Other work on the machine slows every load; the ratios are what to compare.
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{n_images:,} PNGs, {os.cpu_count()} CPUs, load average {load_average:.1f}; "
        "all three loads give identical arrays\n"
    )
    print(f"{'load':<24}{'seconds':>9}{'speed-up':>10}{'target':>9}")
    print(f"{'reference Pillow loop':<24}{ref_s:>9.2f}{'1.0x':>10}{'':>9}")
    loads = {"first load": first_s, "cached reload": cached_s}
    for label, seconds in loads.items():
        ratio = ref_s / seconds
        verdict = "ok" if ratio >= TARGETS[label] else "MISSED"
        print(
            f"{'digitlab ' + label:<24}{seconds:>9.2f}{ratio:>9.1f}x"
            f"{'>= ' + format(TARGETS[label], 'g') + 'x':>9}  {verdict}"
        )
    for label, seconds in loads.items():
        report(f"load {n_images:,} PNGs: {label} vs Pillow loop", digitlab=seconds,
               reference=ref_s, unit="s", ratio=ref_s / seconds,
               target=f"speed-up >= {TARGETS[label]:g}x", met=ref_s / seconds >= TARGETS[label])


if __name__ == "__main__":
    main()
