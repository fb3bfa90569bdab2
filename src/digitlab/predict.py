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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.calibration import calibration_of, scale, temperature_of
from digitlab.data.deskew import deskew_images
from digitlab.data.preprocess import PICTURE_MAX_SIDE, load_user_image, normalise_to
from digitlab.data.preprocess import layout_for as layout_for  # re-exported: one layout rule
from digitlab.errors import DataError, SettingsError
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
    shape = model_shape(info)
    grey = load_user_image(path, max_side=None if raw else MAX_SIDE)
    if raw:
        if grey.shape != shape:
            raise DataError(path, f"image is {grey.shape[0]}x{grey.shape[1]}, the model takes "
                            f"{shape[0]}x{shape[1]} (leave out --raw to normalise it)")
        return as_trained(grey, info)
    return as_trained(normalise_for_model(grey, info, source=path), info)


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


def predict_images(
    model: DigitClassifier, info: ModelInfo, paths: list[str | os.PathLike[str]], *, raw: bool = False,
    min_confidence: float = 0.0,
) -> list[Prediction]:
    """Label and class probabilities of every picture, in the order given (label None:
    unknown, below ``min_confidence``)."""
    check_min_confidence(min_confidence)  # before any picture is read
    files = collect_images(paths)
    images = np.stack([model_input(path, info, raw=raw) for path in files])
    warn_if_pictures_differ(info, images, raw=raw)  # a model trained on other images: say so
    return [Prediction(str(path), reading.label, reading.name, reading.probabilities, image)
            for path, image, reading in zip(files, images, read_images(model, info, images,
                                                            min_confidence=min_confidence),
                                            strict=True)]
