"""Predictions on a user's own pictures: files or folders of images.

By default each picture gets the MNIST-style normalisation of
:func:`digitlab.data.preprocess.prepare_for_model` (greyscale, inverted when
the paper is light, cropped to the ink, scaled into a 20x20 box and centred
by centre of mass in 28x28, then resized to the model's input), so a phone
photo of a dark digit on white paper works. ``raw=True`` skips it for
pictures already in the dataset's form (white ink on black, model's size).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np

from digitlab.calibration import calibration_of, scale, temperature_of
from digitlab.data.deskew import deskew_images
from digitlab.data.imagetree import MAX_PIXELS, plain_png_size
from digitlab.data.preprocess import (
    PICTURE_MAX_SIDE,
    decode_grey_pngs,
    decode_user_image,
    load_user_image,
    normalise_stack,
    normalise_to,
    plain_grey_png,
    read_picture,
    stackable,
)
from digitlab.data.preprocess import layout_for as layout_for  # re-exported: one layout rule
from digitlab.errors import DataError, DataWarning, SettingsError
from digitlab.io import ModelInfo
from digitlab.models import DigitClassifier
from digitlab.preparation import warn_if_pictures_differ

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_SIDE = PICTURE_MAX_SIDE  # big photos decode at a reduced scale: a digit needs no more


@dataclass(frozen=True)
class Prediction:
    path: str
    label: int | None  # None: unknown, below the min_confidence asked for
    name: str
    probabilities: list[float]  # in the order of the model's classes
    image: np.ndarray  # what the model saw: uint8 (h, w)


def collect_images(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly, and those inside named folders (sorted).

    Whatever is not a folder is collected, pipes and devices too: reading
    refuses them by name (:func:`~digitlab.data.files.read_file`) rather
    than skipping them in silence.
    """
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            inside = sorted(p for p in entry.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
            if not inside:
                raise DataError(entry, "folder holds no images")
            found.extend(inside)
        elif entry.exists():
            found.append(entry)
        else:
            raise DataError(entry, "no such file or folder")
    return found


def model_input(path: Path, info: ModelInfo, *, raw: bool = False) -> np.ndarray:
    """The uint8 image the model sees for the picture at ``path``."""
    grey = load_user_image(path, max_side=None if raw else MAX_SIDE)
    return prepare_image(grey, info, raw=raw, source=path)


def prepare_image(
    grey: np.ndarray, info: ModelInfo, *, raw: bool = False, source: str | os.PathLike[str]
) -> np.ndarray:
    """A greyscale uint8 picture ``(h, w)`` as the model sees it: normalised (unless ``raw``)
    and given the model's own training-time preprocessing. Files and arrays both come here,
    so Python reads an array exactly as ``digitlab predict`` reads a file."""
    if raw:
        shape = model_shape(info)
        if grey.shape != shape:
            raise DataError(source, f"image is {grey.shape[0]}x{grey.shape[1]}, the model takes "
                            f"{shape[0]}x{shape[1]} (leave out --raw to normalise it)")
        return as_trained(grey, info)
    return as_trained(normalise_for_model(grey, info, source=source), info)


def deskews(info: ModelInfo) -> bool:
    """Whether the model was trained on deskewed images (``digitlab train --deskew``)."""
    return bool(info.preprocessing.get("deskew", False))


def as_trained(image: np.ndarray, info: ModelInfo) -> np.ndarray:
    """An image in the dataset's form (uint8 ``(h, w)``) given the model's own
    training-time preprocessing: deskewed if the model was trained so."""
    return deskew_images(image[None])[0] if deskews(info) else image


def model_shape(info: ModelInfo) -> tuple[int, int]:
    """The (height, width) of the images a model takes."""
    return int(info.input_shape[0]), int(info.input_shape[1])


def normalise_for_model(
    image: np.ndarray, info: ModelInfo, *, source: str | os.PathLike[str]
) -> np.ndarray:
    """A user's greyscale picture, MNIST-style normalised to the model's input (uint8)."""
    return normalise_to(image, model_shape(info), source=source)  # as --normalise training data


UNKNOWN = "unknown"  # the name of the answer below --min-confidence


@dataclass(frozen=True)
class Reading:
    """What a model reads in one image; ``label`` is None ("unknown") when the model's
    confidence is below the ``min_confidence`` asked for."""

    label: int | None
    name: str
    probabilities: list[float]  # in the order of the model's classes, calibrated


def check_min_confidence(value: float) -> float:
    """``value`` if it is a probability (0 to 1), else a SettingsError (NaN is none)."""
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"min_confidence must be a number from 0 to 1, got {value!r}")
    return value


def read_images(
    model: DigitClassifier, info: ModelInfo, images: np.ndarray, *, min_confidence: float = 0.0
) -> list[Reading]:
    """Label, class name and probabilities for each uint8 image of shape (n, h, w).

    The probabilities carry the model's temperature (:mod:`digitlab.calibration`);
    an image whose largest probability is below ``min_confidence`` reads as unknown.
    """
    check_min_confidence(min_confidence)
    features = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)  # (n, h*w)
    proba = scale(model.predict_proba(features), temperature_of(calibration_of(info)))  # (n, classes)
    readings = []
    for row in proba:
        best = int(np.argmax(row))
        probabilities = [float(p) for p in row]
        if probabilities[best] < min_confidence:
            readings.append(Reading(None, UNKNOWN, probabilities))
            continue
        label = int(model.classes_[best])
        readings.append(Reading(label, info.name_of(label), probabilities))
    return readings


# What to do with a picture that cannot be read: "stop" raises its DataError, "skip" leaves
# it out with a DataWarning, a function is called with the DataError and the picture left out.
OnError: TypeAlias = Literal["stop", "skip"] | Callable[[DataError], object]


def predict_images(
    model: DigitClassifier, info: ModelInfo, paths: list[str | os.PathLike[str]], *, raw: bool = False,
    min_confidence: float = 0.0, on_error: OnError = "stop",
) -> list[Prediction]:
    """Label and class probabilities of every picture, in the order given (label None:
    unknown, below ``min_confidence``).

    A folder or path that holds no picture at all is a mistake in the request and
    raises whatever ``on_error`` says; ``on_error`` applies to each picture file
    that cannot be read or holds no digit (see :data:`OnError`).
    """
    check_min_confidence(min_confidence)  # before any picture is read
    files = collect_images(paths)
    sources = ([(str(path), partial(model_input, path, info, raw=raw)) for path in files]
               if raw or layout_for(model_shape(info)) != "mnist" else _stacked_inputs(files, info))
    return predict_prepared(model, info, sources,
                            on_error=on_error, raw=raw, min_confidence=min_confidence)


STACK = 4096  # small pictures normalised together: ~3 MB of float32 working memory
_PENDING = np.zeros((0, 0), dtype=np.uint8)


def _stacked_inputs(files: list[Path], info: ModelInfo) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """``(name, prepare)`` pairs as :func:`model_input` gives them, with the same images,
    but small same-size pictures normalised as stacks (:func:`normalise_stack`, ~5x
    faster for 28x28 PNGs) rather than one by one, and plain grey PNGs among them
    decoded as a batch (:func:`plain_grey_png`). Every file is read first; a file's
    DataError is raised by its own ``prepare()``, in order, as before."""
    done: list[np.ndarray | DataError] = []
    waiting: dict[tuple[int, ...], list[int]] = {}  # picture shape -> indices into done
    greys: dict[int, np.ndarray] = {}  # the pictures waiting, by index
    scanlines: dict[int, bytes] = {}  # ... or, for plain grey PNGs, their scanlines

    def flush(shape: tuple[int, ...], indices: list[int]) -> None:
        plain = [i for i in indices if i in scanlines]
        if plain:
            decoded = decode_grey_pngs(shape, [scanlines.pop(i) for i in plain])
            greys.update(zip(plain, decoded, strict=True))
        stack, ok = normalise_stack(np.stack([greys[i] for i in indices]), model_shape(info))
        for i, image, good in zip(indices, stack, ok, strict=True):
            grey = greys.pop(i)  # a blank one again on its own: its DataError says so
            done[i] = as_trained(image, info) if good else _prepared(grey, info, files[i])
        indices.clear()

    for i, path in enumerate(files):
        try:
            data = read_picture(path)
            # From the header first: a big plain PNG is not inflated here to be decoded again.
            size = plain_png_size(data)
            plain = plain_grey_png(data) if size is not None and stackable(size) else None
            if plain is not None:
                shape: tuple[int, ...] = plain[0]
                scanlines[i] = plain[1]
            else:
                grey = decode_user_image(data, source=path, max_side=MAX_SIDE, max_pixels=MAX_PIXELS)
                shape = grey.shape
        except DataError as exc:
            done.append(exc)
            continue
        if i not in scanlines and not stackable(shape):  # big pictures one by one, right away
            done.append(_prepared(grey, info, path))
            continue
        done.append(_PENDING)  # a placeholder until its stack is normalised
        if i not in scanlines:
            greys[i] = grey
        group = waiting.setdefault(shape, [])
        group.append(i)
        if len(group) == STACK:
            flush(shape, group)
    for shape, group in waiting.items():
        if group:
            flush(shape, group)
    return [(str(path), partial(_replay, result)) for path, result in zip(files, done, strict=True)]


def _prepared(grey: np.ndarray, info: ModelInfo, path: Path) -> np.ndarray | DataError:
    """:func:`prepare_image` of a picture, or the DataError it raised."""
    try:
        return prepare_image(grey, info, source=path)
    except DataError as exc:
        return exc


def _replay(result: np.ndarray | DataError) -> np.ndarray:
    if isinstance(result, DataError):
        raise result
    return result


def predict_prepared(
    model: DigitClassifier, info: ModelInfo, sources: Iterable[tuple[str, Callable[[], np.ndarray]]],
    *, on_error: OnError = "stop", raw: bool = False, min_confidence: float = 0.0,
) -> list[Prediction]:
    """Predictions for ``(name, prepare)`` pairs, ``prepare()`` giving the model's uint8 input.

    Pictures whose ``prepare()`` raises a DataError are left out (unless
    ``on_error="stop"``), so the others still form one batch; an empty list when none is left.
    ``raw``: the pictures were not normalised (for the warning of a model trained on
    differently prepared images).
    """
    if not (on_error in ("stop", "skip") or callable(on_error)):
        raise ValueError(f"on_error must be 'stop', 'skip' or a function, got {on_error!r}")
    names, images = [], []
    for name, prepare in sources:
        try:
            images.append(prepare())
        except DataError as exc:
            if callable(on_error):
                on_error(exc)
            elif on_error == "skip":
                warnings.warn(f"skipped {exc}", DataWarning, stacklevel=3)
            else:
                raise
            continue
        names.append(name)
    if not images:
        return []
    stack = np.stack(images)  # (n, h, w): one pass through the model for the whole batch
    warn_if_pictures_differ(info, stack, raw=raw)  # a model trained on other images: say so
    return [Prediction(name, reading.label, reading.name, reading.probabilities, image)
            for name, image, reading in zip(names, stack, read_images(model, info, stack,
                                                                      min_confidence=min_confidence),
                                            strict=True)]


def write_inputs(folder: str | os.PathLike[str], predictions: list[Prediction]) -> list[Path]:
    """Write the image each prediction's model saw (its uint8 ``image``, white ink on black)
    as a PNG into ``folder`` (made when missing): ``scan.jpg`` -> ``scan.input.png``, named
    as ``--explain`` names its maps; each file whole or not at all."""
    from PIL import Image

    from digitlab.atomic import atomic_file
    from digitlab.explain import explanation_names

    written = []
    for name, prediction in zip(explanation_names([p.path for p in predictions], suffix="input"),
                                predictions, strict=True):
        with atomic_file(Path(folder) / name) as tmp:
            Image.fromarray(prediction.image).save(tmp, format="PNG")
        written.append(Path(folder) / name)
    return written
