"""Named datasets and paths -> :class:`~digitlab.data.dataset.Dataset`.

``--data NAME_OR_PATH`` everywhere goes through :func:`load`:

- ``mnist-sample``: 5,000 real MNIST digits bundled with digitlab (4,000 train
  / 1,000 test, stratified; see ``mnist_sample.md`` beside this file);
- ``digits``: scikit-learn's 8x8 digits in their original order;
- ``fashion-mnist``: Debian's copy when installed, else downloaded;
- ``mnist``: the full MNIST, downloaded once and checked by SHA-256;
- a path: an image folder tree, a flat folder of images with a labels file
  (``labels.csv``, or ``labels=``; see :mod:`digitlab.data.labelsfile`), a
  folder of IDX files, a Keras ``.npz``, a CSV or a MATLAB ``.mat``.

``normalise=`` gives every image, from any source, the MNIST-style
normalisation ``digitlab predict`` gives a picture
(:func:`~digitlab.data.preprocess.normalise_to`), so a model trained on it
meets pictures prepared exactly as its training data were. Image files are
then read as pictures are (:func:`~digitlab.data.preprocess.load_picture`)
and may differ in size and polarity.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

from digitlab.data import cache, download, formats, imagetree, labelsfile, preprocess
from digitlab.data.dataset import Dataset
from digitlab.errors import DataError, SettingsError

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
    labels: str | Path | None = None,
    normalise: bool | int | tuple[int, int] = False,
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
    labels : str or Path, optional
        A flat folder of images only: its labels file, when it is not the
        folder's ``labels.csv``.
    normalise : bool, int or (height, width)
        Normalise every image as ``digitlab predict`` normalises a picture:
        to 28x28 (True) or to the size given. Images may then differ in size
        and polarity.
    """
    name = str(source)
    shape = normalised_shape(normalise)
    if name in NAMED:
        if labels is not None:
            raise DataError(labels, f"a labels file goes with a folder of images, not with {name}")
        dataset = load_named(name)
        return dataset if shape is None else normalise_dataset(dataset, shape)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(path, f"no such file or folder (named datasets: {', '.join(NAMED)})")
    splits = read_path(path, label_column=label_column, labels=labels, normalise=shape)
    notes = () if shape is None else (_normalised_note(shape),)
    return Dataset.from_splits(name, splits, test_fraction=test_fraction, seed=seed, notes=notes)


def load_named(name: str) -> Dataset:
    """One of the :data:`NAMED` datasets."""
    if name == "mnist-sample":
        return load_mnist_sample()
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        folder = download.fashion_mnist_folder()
        return Dataset.from_splits(name, read_idx_folder_cached(folder), class_names=FASHION_CLASSES)
    if name == "mnist":
        return Dataset.from_splits(name, read_idx_folder_cached(download.fetch_mnist()))
    raise ValueError(f"not a named dataset: {name!r}")


def read_path(
    path: Path,
    *,
    label_column: str | int | None = None,
    labels: str | Path | None = None,
    normalise: tuple[int, int] | None = None,
) -> formats.Splits:
    """Read any supported file or folder, choosing the reader by its layout.

    ``normalise``: the (height, width) to normalise every image to, as
    :func:`load` does.
    """
    decode = None if normalise is None else functools.partial(preprocess.normalise_files,
                                                              shape=normalise)
    # labels.csv makes a flat folder, unless the folder is a tree of class folders after all
    flat = path.is_dir() and labelsfile.has_labels_file(path) and not imagetree.is_image_tree(path)
    if labels is not None or flat:
        return imagetree.decode_listing(labelsfile.list_labelled_folder(path, labels), decode=decode)
    if path.is_dir() and not formats.find_idx_files(path):
        if decode is not None:  # each file read as a picture, whatever its size
            return imagetree.decode_listing(imagetree.list_image_tree(path), decode=decode)
        return imagetree.read_image_tree(path)
    splits = _read_arrays(path, label_column)
    if normalise is None:
        return splits
    return {split: (preprocess.normalise_images(images, normalise, source=str(path),
                                                what=f"{split} image"), split_labels)
            for split, (images, split_labels) in splits.items()}


def _read_arrays(path: Path, label_column: str | int | None) -> formats.Splits:
    """The formats that store arrays: IDX folders, .npz, CSV, .mat."""
    if path.is_dir():
        return read_idx_folder_cached(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".npz"):
        return formats.read_npz(path)
    if suffixes.endswith((".csv", ".csv.gz")):
        return formats.read_csv(path, label_column=label_column)
    if suffixes.endswith(".mat"):
        return formats.read_mat(path)
    raise DataError(path, "unknown format: expected a folder, .npz, .csv, .csv.gz or .mat")


def read_idx_folder_cached(folder: Path) -> formats.Splits:
    """:func:`~digitlab.data.formats.read_idx_folder`, its arrays cached when a file is gzipped.

    Inflating Fashion-MNIST's four ``.gz`` files takes about 0.2 s every run; reading
    the decoded arrays back from the image-tree cache (:mod:`digitlab.data.cache`)
    0.02 s. The key covers each IDX file's name, size and modification time, so a
    replaced or touched file is read again. Raw IDX files read as fast as the cache.
    """
    found = formats.find_idx_files(folder) or {}
    files = sorted(path for kinds in found.values() for path in kinds.values())
    if not any(path.name.lower().endswith(".gz") for path in files):
        return formats.read_idx_folder(folder)
    try:
        stats = [path.stat() for path in files]
    except OSError:  # read_idx_folder says what is wrong with the file
        return formats.read_idx_folder(folder)
    key = cache.tree_key(folder, [path.name for path in files], [st.st_size for st in stats],
                         [st.st_mtime_ns for st in stats])
    cached = cache.load(folder, key)
    if cached is not None:
        return cached
    splits = formats.read_idx_folder(folder)
    cache.store(folder, key, splits)
    return splits


def normalised_shape(normalise: bool | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``normalise=`` as the (height, width) to normalise to, or None for no normalisation."""
    if normalise is None or normalise is False:
        return None
    if normalise is True:
        return (preprocess.MNIST_SIZE, preprocess.MNIST_SIZE)
    sides = (normalise, normalise) if isinstance(normalise, int) else tuple(normalise)
    if len(sides) != 2 or not all(isinstance(side, int) and 1 <= side <= 1024 for side in sides):
        raise SettingsError(f"normalise must be True or a size of 1 to 1024 pixels, got {normalise!r}")
    return int(sides[0]), int(sides[1])


def normalise_dataset(dataset: Dataset, shape: tuple[int, int]) -> Dataset:
    """Every split of ``dataset`` normalised to ``shape`` as :func:`load` ``(normalise=)`` does."""
    changes = {f"{split}_images": preprocess.normalise_images(
        dataset.images(split), shape, source=dataset.name, what=f"{split} image")
        for split in dataset.splits}
    if "validation" not in dataset.splits:  # empty, in the new shape
        changes["validation_images"] = np.empty((0, *shape), np.uint8)
    return dataset.replace(**changes, notes=(*dataset.notes, _normalised_note(shape)))


def _normalised_note(shape: tuple[int, int]) -> str:
    return (f"every image normalised to {shape[0]}x{shape[1]} as digitlab predict normalises "
            "a picture (ink found and made white on black, cropped, scaled, centred)")


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
