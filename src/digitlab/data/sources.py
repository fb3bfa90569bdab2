"""Named datasets and paths -> :class:`~digitlab.data.dataset.Dataset`.

``--data NAME_OR_PATH`` everywhere goes through :func:`load`:

- ``mnist-sample``: 5,000 real MNIST digits bundled with digitlab (4,000 train
  / 1,000 test, stratified; see ``mnist_sample.md`` beside this file);
- ``digits``: scikit-learn's 8x8 digits in their original order;
- ``fashion-mnist``: Debian's copy when installed, else downloaded;
- ``mnist``: the full MNIST, downloaded once and checked by SHA-256;
- a path: an image folder tree, a folder of IDX files, a Keras ``.npz``, a
  CSV or a MATLAB ``.mat``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from digitlab.data import download, formats, imagetree
from digitlab.data.dataset import Dataset
from digitlab.errors import DataError

SAMPLE_FILE = "mnist_sample.npz"
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGITS_LEVELS = 16  # scikit-learn's 8x8 digits count ink in 0..16
DIGITS_TRAIN = 1000  # the classic protocol: first 1,000 train, the rest (797) test

NAMED = ("mnist-sample", "digits", "fashion-mnist", "mnist")


def load(
    source: str | Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str | int | None = None,
) -> Dataset:
    """Load a named dataset or a path as a Dataset.

    Parameters
    ----------
    source : str or Path
        One of :data:`NAMED`, or a path to a folder tree, IDX folder, ``.npz``,
        CSV or ``.mat``.
    test_fraction : float
        Share of images held out (stratified, with ``seed``) when the source has
        no test split of its own.
    seed : int
        Seed of that hold-out.
    label_column : str or int, optional
        CSV only: the label column's name or index.
    """
    name = str(source)
    if name == "mnist-sample":
        return load_mnist_sample()
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        folder = download.fashion_mnist_folder()
        return Dataset.from_splits(name, formats.read_idx_folder(folder), class_names=FASHION_CLASSES)
    if name == "mnist":
        return Dataset.from_splits(name, formats.read_idx_folder(download.fetch_mnist()))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(path, f"no such file or folder (named datasets: {', '.join(NAMED)})")
    splits = read_path(path, label_column=label_column)
    return Dataset.from_splits(name, splits, test_fraction=test_fraction, seed=seed)


def read_path(path: Path, *, label_column: str | int | None = None) -> formats.Splits:
    """Read any supported file or folder, choosing the reader by its layout."""
    if path.is_dir():
        if formats.find_idx_files(path):
            return formats.read_idx_folder(path)
        return imagetree.read_image_tree(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".npz"):
        return formats.read_npz(path)
    if suffixes.endswith((".csv", ".csv.gz")):
        return formats.read_csv(path, label_column=label_column)
    if suffixes.endswith(".mat"):
        return formats.read_mat(path)
    raise DataError(path, "unknown format: expected a folder, .npz, .csv, .csv.gz or .mat")


def sample_path() -> Path:
    """Where the bundled MNIST sample lies inside the installed package."""
    return Path(str(resources.files("digitlab.data").joinpath(SAMPLE_FILE)))


def load_mnist_sample() -> Dataset:
    """The bundled 5,000 real MNIST digits: 4,000 train / 1,000 test."""
    return Dataset.from_splits("mnist-sample", formats.read_npz(sample_path()))


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, original order: first 1,000 train, rest test.

    Raw values 0..16 become ``round(v * 255 / 16)`` so ink is 255 as in MNIST;
    :func:`digits_raw_values` recovers the raw values exactly (the classic
    exercise divides them by 15).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    raw = bunch.images.astype(np.int64)
    images = np.rint(raw * (255.0 / DIGITS_LEVELS)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    splits = {
        "train": (images[:DIGITS_TRAIN], labels[:DIGITS_TRAIN]),
        "test": (images[DIGITS_TRAIN:], labels[DIGITS_TRAIN:]),
    }
    return Dataset.from_splits(
        "digits", splits, notes=("scikit-learn 8x8 digits: first 1,000 train, the next 797 test",)
    )


def digits_raw_values(images: np.ndarray) -> np.ndarray:
    """Invert :func:`load_digits`' scaling: uint8 0..255 -> the raw 0..16 counts (int64)."""
    return np.rint(images.astype(np.float64) * (DIGITS_LEVELS / 255.0)).astype(np.int64)
