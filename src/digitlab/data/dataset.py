"""The Dataset: train, validation and test images in the uint8 contract, and their labels.

A Dataset is immutable; every helper (``take``, ``keep_classes``,
``for_task``, ``resized``) returns a new one, so a loaded dataset can be
shared between experiments without surprises.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from digitlab import splits
from digitlab.data.formats import Splits, check_label_range, check_pair
from digitlab.errors import DataError
from digitlab.tasks import Task, parse_task

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images uint8 ``(n, h, w)`` (0 background, 255 ink) and labels int64 ``(n,)``.

    Sources give train and test splits; :meth:`with_validation` carves a
    validation split out of the train images, for everything training chooses
    (epochs, the kept epoch, calibration), so that the test split is only
    ever read once, after training. Without it the validation split is empty.

    Attributes
    ----------
    name : str
        Short name of the source ("mnist-sample", a path, ...).
    train_images, test_images : ndarray of shape (n, h, w), uint8
    train_labels, test_labels : ndarray of shape (n,), int64
    class_names : tuple of str
        Name of each label value: ``class_names[label]``. By default the
        labels' own numbers, ``"0"`` up to the largest label present; labels
        lie in 0..:data:`~digitlab.data.formats.MAX_LABEL`, so this tuple is
        never longer than that.
    notes : tuple of str
        What was done to the data on the way in (e.g. a hold-out split).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    task: str = "all"
    validation_images: np.ndarray | None = None  # None: no validation split (empty)
    validation_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.validation_images is None or self.validation_labels is None:
            shape = getattr(self.train_images, "shape", (0, 0, 0))[1:]
            object.__setattr__(self, "validation_images", np.empty((0, *shape), np.uint8))
            object.__setattr__(self, "validation_labels", np.empty(0, np.int64))
        for split in SPLIT_NAMES:
            images, labels = self.images(split), self.labels(split)
            if images.dtype != np.uint8 or images.ndim != 3:
                raise DataError(self.name, f"{split} images must be uint8 (n, h, w)")
            if labels.dtype != np.int64 or labels.shape != (len(images),):
                raise DataError(self.name, f"{split} labels must be int64 of shape ({len(images)},)")
            # Readers refuse such labels already; a Dataset built by hand must too,
            # before one label of 4e9 asks for four billion class names below.
            check_label_range(labels, self.name)
        if not self.train_images.shape[1:] == self.images("validation").shape[1:] == self.test_images.shape[1:]:
            raise DataError(self.name, "train, validation and test images differ in shape")
        if not self.class_names:
            n_classes = int(max(self.labels(split).max(initial=-1) for split in SPLIT_NAMES)) + 1
            object.__setattr__(self, "class_names", tuple(str(c) for c in range(n_classes)))

    # ------------------------------------------------------------ construction

    @classmethod
    def from_splits(
        cls,
        name: str,
        splits: Splits,
        *,
        test_fraction: float = 0.2,
        seed: int = 0,
        class_names: tuple[str, ...] = (),
        notes: tuple[str, ...] = (),
    ) -> Dataset:
        """Build a Dataset from a reader's splits, holding out a test split if none.

        Without a ``"test"`` split, a stratified ``test_fraction`` of the train
        images is held out, drawn with ``seed``, and a note says so.
        """
        train_images, train_labels = check_pair(*splits["train"], name)
        if "test" in splits:
            test_images, test_labels = check_pair(*splits["test"], name)
        else:
            train_idx, test_idx = stratified_holdout(train_labels, test_fraction, seed, source=name)
            test_images, test_labels = train_images[test_idx], train_labels[test_idx]
            train_images, train_labels = train_images[train_idx], train_labels[train_idx]
            notes = (
                *notes,
                f"no test split in the source: held out a stratified {test_fraction:.0%} "
                f"({len(test_idx)} images) with seed {seed}",
            )
        return cls(name, train_images, train_labels, test_images, test_labels, class_names, notes)

    # ------------------------------------------------------------ access

    def images(self, split: str) -> np.ndarray:
        """Images of ``split`` ("train", "validation" or "test"), uint8 ``(n, h, w)``."""
        images: np.ndarray = getattr(self, f"{_check_split(split)}_images")
        return images

    def labels(self, split: str) -> np.ndarray:
        """Labels of ``split``, int64 ``(n,)``."""
        labels: np.ndarray = getattr(self, f"{_check_split(split)}_labels")
        return labels

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits holding images, in order: train, validation when carved, test."""
        return tuple(split for split in SPLIT_NAMES if split != "validation" or len(self.labels(split)))

    def features(self, split: str) -> np.ndarray:
        """Model input: float32 ``(n, h*w)`` in [0, 1] (pixel / 255)."""
        images = self.images(split)
        out = images.reshape(len(images), images.shape[1] * images.shape[2]).astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(h, w)`` of every image."""
        h, w = self.train_images.shape[1:]
        return int(h), int(w)

    @property
    def classes(self) -> np.ndarray:
        """Sorted label values present in any split, int64."""
        return np.unique(np.concatenate([self.labels(split) for split in SPLIT_NAMES]))

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, label: int) -> str:
        """The name of ``label`` (``class_names`` is indexed by label)."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def counts(self, split: str) -> dict[int, int]:
        """Images per label in ``split``."""
        values, counts = np.unique(self.labels(split), return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def fingerprint(self) -> str:
        """SHA-256 over every split's images and labels: identifies training data."""
        digest = hashlib.sha256()
        for split in self.splits:
            images = np.ascontiguousarray(self.images(split))
            digest.update(str(images.shape).encode())
            # The arrays' own buffers (the same bytes as tobytes()): no 47 MB copy of MNIST.
            digest.update(images.data)
            digest.update(np.ascontiguousarray(self.labels(split)).data)
        return digest.hexdigest()

    # ------------------------------------------------------------ derived datasets

    def replace(self, **changes: object) -> Dataset:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def take(self, split: str, start: int = 0, count: int | None = None) -> Dataset:
        """Keep images ``start .. start+count`` of ``split`` (in stored order).

        The classic "train on the first 1,000, test on the next 500" protocol is
        ``take("train", 0, 1000).take("test", 0, 500)`` on a source whose test
        split continues the train split.
        """
        images, labels = self.images(split), self.labels(split)
        if start < 0 or start >= len(images):
            raise DataError(self.name, f"start {start} is outside the {len(images)} {split} images")
        stop = len(images) if count is None else start + count
        if count is not None and (count <= 0 or stop > len(images)):
            raise DataError(
                self.name,
                f"count {count} from {start} runs past the {len(images)} {split} images",
            )
        return self.replace(**{f"{split}_images": images[start:stop], f"{split}_labels": labels[start:stop]})

    def keep_classes(self, classes: list[int] | tuple[int, ...] | np.ndarray) -> Dataset:
        """Keep only images whose label is in ``classes`` (labels unchanged)."""
        wanted = np.asarray(classes, dtype=np.int64)
        changes: dict[str, object] = {}
        for split in self.splits:
            keep = np.isin(self.labels(split), wanted)
            if not keep.any():
                raise DataError(self.name, f"no {split} images of classes {wanted.tolist()}")
            changes[f"{split}_images"] = self.images(split)[keep]
            changes[f"{split}_labels"] = self.labels(split)[keep]
        return self.replace(**changes)

    def for_task(self, task: str | Task) -> Dataset:
        """Map labels for a task: ``"all"``, ``"is-2"`` (2 vs rest), ``"0-vs-1"`` ..."""
        task = parse_task(task) if isinstance(task, str) else task
        if task.kind == "all":
            return self
        problem = task.check_labels({int(c) for c in self.classes})
        if problem:
            raise DataError(self.name, problem)
        changes: dict[str, object] = {"task": task.name, "class_names": task.class_names(self.class_names)}
        for split in self.splits:
            images, labels = task.apply(self.images(split), self.labels(split))
            changes[f"{split}_images"], changes[f"{split}_labels"] = images, labels
        return self.replace(**changes)

    def map_images(self, transform: Callable[[np.ndarray], np.ndarray], note: str) -> Dataset:
        """Apply ``transform(images) -> images`` to every split (e.g. a resize)."""
        if not callable(transform):
            raise TypeError(f"transform must be a function of the images, got {transform!r}")
        changes: dict[str, np.ndarray] = {f"{split}_images": transform(self.images(split))
                                          for split in self.splits}
        if "validation" not in self.splits:  # still empty, in the new shape
            shape = changes["train_images"].shape[1:]
            changes["validation_images"] = np.empty((0, *shape), np.uint8)
        return self.replace(**changes, notes=(*self.notes, note))

    def resized(self, size: int) -> Dataset:
        """Every image resized to ``size`` x ``size`` by area resampling (``--image-size``)."""
        from digitlab.data.preprocess import resize_images  # SciPy-free, but not needed before

        return self.map_images(lambda images: resize_images(images, size), f"resized to {size}x{size}")

    def with_validation(self, fraction: float, seed: int) -> Dataset:
        """Move a stratified ``fraction`` of the train images into the validation split.

        Drawn with ``seed`` by :func:`digitlab.splits.stratified_holdout`; a
        fraction of 0 returns the dataset unchanged (an empty validation split).
        """
        if "validation" in self.splits:
            raise ValueError("the dataset already has a validation split")
        if fraction == 0:
            return self
        kept, held = stratified_holdout(self.train_labels, fraction, seed, source=self.name)
        note = (f"validation split: a stratified {fraction:.0%} of the train images "
                f"({len(held)}) held out with seed {seed}, for what training chooses")
        return self.replace(
            train_images=self.train_images[kept], train_labels=self.train_labels[kept],
            validation_images=self.train_images[held], validation_labels=self.train_labels[held],
            notes=(*self.notes, note),
        )

    def __repr__(self) -> str:
        """One short line: name, task, image shape, counts per split, classes (never the arrays)."""
        counts = ", ".join(f"{split}={len(self.labels(split))}" for split in self.splits)
        names = ", ".join(self.class_names)
        return (f"Dataset({self.name!r}, task={self.task!r}, images {self.image_shape[0]}x"
                f"{self.image_shape[1]}, {counts}, classes [{names}])")

    def _repr_html_(self) -> str:
        """Jupyter's view: counts per class and split, and a few random digits per class."""
        # Imported here: the data layer draws nothing itself, and matplotlib loads
        # only when a notebook asks for the picture.
        from digitlab.display import dataset_html

        return dataset_html(self)

    def summary(self) -> dict[str, object]:
        """Counts per class and split, shape, dtype and notes, JSON-ready."""
        return {
            "name": self.name,
            "task": self.task,
            "image_shape": list(self.image_shape),
            "dtype": str(self.train_images.dtype),
            "classes": list(self.class_names),
            "splits": {
                split: {"count": len(self.labels(split)), "per_class": self.counts(split)}
                for split in self.splits
            },
            "notes": list(self.notes),
        }


def _check_split(split: str) -> str:
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}; got {split!r}")
    return split


def stratified_holdout(
    labels: np.ndarray, test_fraction: float, seed: int, *, source: str = "data"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a seeded, stratified hold-out (see
    :func:`digitlab.splits.stratified_holdout`); problems name ``source``."""
    try:
        return splits.stratified_holdout(labels, test_fraction, seed)
    except ValueError as exc:
        raise DataError(source, str(exc)) from None
