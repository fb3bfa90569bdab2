"""Reading digits from Python, exactly as ``digitlab predict`` reads them.

>>> reader = digitlab.load_model("runs/mlp/model.safetensors")   # doctest: +SKIP
>>> [p.name for p in reader.read(["scan.jpg", "photos/"])]        # doctest: +SKIP
>>> reader.predict(np.asarray(Image.open("digit.png").convert("L")))  # doctest: +SKIP

A :class:`Reader` is a loaded model together with what its file says about
it (:class:`~digitlab.io.ModelInfo`: classes, names, input size, training-time
preprocessing), so it can take pictures as they come -- files, folders,
uint8 arrays or PIL images of any size -- and prepare each one as the
command line does (:func:`digitlab.predict.prepare_image`). Its model
(``reader.model``) is the scikit-learn-style estimator, which takes features
already prepared: float32 ``(n, h*w)`` in [0, 1], light ink on dark.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from digitlab import io
from digitlab.errors import DataError
from digitlab.models import DigitClassifier
from digitlab.predict import (
    OnError,
    Prediction,
    check_min_confidence,
    collect_images,
    model_input,
    predict_prepared,
    prepare_image,
)

# One picture (a path, a (h, w) array, a PIL image), a stack (n, h, w), or a list of these.
Inputs: TypeAlias = Any


@dataclass(frozen=True)
class Reader:
    """A saved model, ready to read pictures. Made by :func:`load_model`.

    Attributes
    ----------
    model : DigitClassifier
        The estimator (``predict``, ``predict_proba`` on prepared features).
    info : ModelInfo
        The file's metadata: kind, classes, class names, input shape, preprocessing.
    """

    model: DigitClassifier
    info: io.ModelInfo

    @property
    def classes_(self) -> np.ndarray:
        """The labels, in the order of every probability row (scikit-learn's name)."""
        return np.asarray(self.model.classes_)

    @property
    def class_names(self) -> list[str]:
        """The name of each label in ``classes_`` (the digit itself when the data had none)."""
        return [self.info.name_of(int(label)) for label in self.classes_]

    def read(self, inputs: Inputs, *, raw: bool = False, on_error: OnError = "stop",
             min_confidence: float = 0.0) -> list[Prediction]:
        """Label, class name and probabilities of every picture in ``inputs``, in order.

        Parameters
        ----------
        inputs : path, array, PIL image, or a list of them
            A file or folder path (a folder gives its pictures, sorted), a uint8
            (or integer 0..255, or bool) greyscale array of shape (h, w) of any
            size, a stack of shape (n, h, w), a PIL image, or a list mixing these.
            Either polarity (dark ink on light paper is inverted).
        raw : bool
            Skip the MNIST-style normalisation: pictures are light ink on dark,
            at the model's input size already.
        on_error : "stop", "skip" or a function
            For a picture that cannot be read or shows no digit: raise its
            :class:`~digitlab.errors.DataError` ("stop"), leave it out with a
            :class:`~digitlab.errors.DataWarning` ("skip"), or leave it out and
            call the function with the DataError.
        min_confidence : float
            Below this probability (after calibration) the answer is unknown:
            ``label`` None, ``name`` "unknown", as ``predict --min-confidence``.

        Returns
        -------
        list of Prediction
            ``path`` (the file, or where the array was in ``inputs``: ``inputs[3]``,
            ``inputs[1][0]``, ``input`` for a lone array), ``label``, ``name``,
            ``probabilities`` (in the order of ``classes_``) and ``image``, the
            uint8 picture the model saw.
        """
        sources = list(_sources(inputs, self.info, raw=raw))
        return predict_prepared(self.model, self.info, sources, on_error=on_error, raw=raw,
                                min_confidence=check_min_confidence(min_confidence))

    def predict(self, inputs: Inputs, *, raw: bool = False) -> np.ndarray:
        """The label of each picture, shape (n_pictures,); any unreadable picture raises."""
        readings = self.read(inputs, raw=raw)
        return np.array([p.label for p in readings], dtype=self.classes_.dtype)

    def predict_proba(self, inputs: Inputs, *, raw: bool = False) -> np.ndarray:
        """Class probabilities, shape (n_pictures, n_classes), columns in ``classes_`` order."""
        readings = self.read(inputs, raw=raw)
        return np.array([p.probabilities for p in readings], dtype=np.float64).reshape(
            len(readings), len(self.classes_))

    def __repr__(self) -> str:
        height, width = self.info.input_shape
        return (f"Reader({self.info.kind}, classes {self.class_names}, "
                f"input {height}x{width})")


def load_model(path: str | os.PathLike[str]) -> Reader:
    """Read a model file written by ``digitlab train`` (checked; see :func:`digitlab.io.load_model`)."""
    model, info = io.load_model(path)
    return Reader(model, info)


def read_digits(
    model: Reader | str | os.PathLike[str], inputs: Inputs, *, raw: bool = False,
    on_error: OnError = "stop", min_confidence: float = 0.0,
) -> list[Prediction]:
    """One call: ``load_model(model).read(inputs)`` (a Reader is used as it is).

    Load the model once with :func:`load_model` when reading many batches.
    """
    reader = model if isinstance(model, Reader) else load_model(model)
    return reader.read(inputs, raw=raw, on_error=on_error, min_confidence=min_confidence)


# ---------------------------------------------------------------- inputs


def _sources(
    inputs: Inputs, info: io.ModelInfo, *, raw: bool
) -> Iterable[tuple[str, Callable[[], np.ndarray]]]:
    """``(name, prepare)`` for each picture of ``inputs``; ``prepare()`` gives what the model sees."""
    if _is_one(inputs):
        yield from _item_sources(inputs, "input", info, raw=raw, alone=True)
        return
    if not isinstance(inputs, Iterable):
        raise TypeError(f"inputs must be paths, arrays or PIL images, got {type(inputs).__name__}")
    for index, item in enumerate(inputs):
        yield from _item_sources(item, f"inputs[{index}]", info, raw=raw, alone=False)


def _is_one(inputs: Inputs) -> bool:
    """A single path, array or PIL image (not a list of them)."""
    return isinstance(inputs, str | os.PathLike | np.ndarray) or _is_pil(inputs)


def _is_pil(item: object) -> bool:
    from PIL import Image

    return isinstance(item, Image.Image)


def _item_sources(
    item: Any, name: str, info: io.ModelInfo, *, raw: bool, alone: bool
) -> Iterable[tuple[str, Callable[[], np.ndarray]]]:
    if isinstance(item, str | os.PathLike):
        for path in collect_images([item]):
            yield str(path), partial(model_input, Path(path), info, raw=raw)
    elif _is_pil(item):
        from digitlab.data.preprocess import to_greyscale

        yield name, lambda: prepare_image(to_greyscale(item, name), info, raw=raw, source=name)
    elif isinstance(item, np.ndarray):
        pixels = _checked_pixels(item, "inputs" if alone else name)
        if pixels.ndim == 2:
            yield name, partial(prepare_image, pixels, info, raw=raw, source=name)
        else:
            for i, image in enumerate(pixels):
                row = f"inputs[{i}]" if alone else f"{name}[{i}]"
                yield row, partial(prepare_image, image, info, raw=raw, source=row)
    else:
        raise TypeError(f"{name}: expected a path, a uint8 array or a PIL image, "
                        f"got {type(item).__name__}")


def _checked_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as uint8 greyscale, (h, w) or (n, h, w); DataError saying why not."""
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[1] > 4:
        raise DataError(name, f"shape {array.shape} looks like a colour image; pass greyscale "
                        "(h, w), a stack (n, h, w), or a PIL image")
    if array.ndim not in (2, 3):
        raise DataError(name, f"expected a greyscale image (h, w) or a stack (n, h, w), "
                        f"got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind in "iu" and array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(name, f"pixels must lie in 0..255, got {array.min()}..{array.max()}")
        return array.astype(np.uint8)
    if array.dtype != np.uint8:
        hint = (" (features in [0, 1]? pass (x * 255).round().astype(np.uint8))"
                if array.dtype.kind == "f" else "")
        raise DataError(name, f"pixels must be uint8 0..255, got {array.dtype}{hint}")
    return array
