"""Save and load models: one safetensors file with JSON metadata. Never pickle.

The file holds the model's ``state_dict()`` arrays as tensors and, in the
safetensors header, one metadata entry ``"digitlab"``: JSON holding ``info``
(the format version, the model kind and settings, classes, input shape,
preprocessing, a fingerprint of the training data and anything else the
caller adds, such as the task) and ``sha256``, which covers ``info`` and every
tensor's bytes, so a changed or damaged file is refused instead of silently
giving other predictions (safetensors itself checks only the layout). One
entry, not two: safetensors does not keep the order of metadata entries, and
the same model should always give the same bytes.

A valid checksum only shows that the file is as its writer left it, and anyone
can compute one. So :func:`load_model` also checks that the metadata and the
tensors agree with each other and with the model kind (each kind declares the
arrays its settings give: ``DigitClassifier.check_state``) before it returns:
a file that passes gives predictions, never an IndexError or a shape mismatch.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from digitlab import __version__
from digitlab.atomic import atomic_file
from digitlab.calibration import Calibration, metadata_problem
from digitlab.data.files import open_binary
from digitlab.errors import DataError, SettingsError
from digitlab.models import DigitClassifier, readable_models

if TYPE_CHECKING:
    from digitlab.data.dataset import Dataset

FORMAT_VERSION = 1
# A digitlab header (tensor names and offsets, settings, class names) is a few KB.
# safetensors allows 100 MB, which Python's JSON parser needs gigabytes to read.
MAX_HEADER_BYTES = 1_000_000
# Longest side of a model's input images (the web API's limit for a pixel array):
# evaluating resizes a dataset to the model's input, so a file must not ask for any size.
MAX_INPUT_SIDE = 1024


@dataclass
class ModelInfo:
    """The metadata stored beside a model's weights."""

    kind: str
    settings: dict[str, Any]
    classes: list[int]
    input_shape: list[int]
    class_names: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # temperature scaling fitted on the validation split (digitlab.calibration); {} = none
    calibration: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    digitlab_version: str = __version__

    def name_of(self, label: int) -> str:
        """The class name of ``label`` (names are indexed by label, not by position)."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


def save_model(
    path: str | os.PathLike[str],
    model: DigitClassifier,
    *,
    dataset: Dataset | None = None,
    input_shape: tuple[int, ...] | None = None,
    class_names: tuple[str, ...] | list[str] = (),
    preprocessing: dict[str, Any] | None = None,
    data_fingerprint: str = "",
    extra: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
) -> ModelInfo:
    """Write ``model`` to ``path`` atomically; return the metadata written.

    ``dataset``, the data the model was trained on, gives ``input_shape``,
    ``class_names`` and the record of its images that ``digitlab train`` stores
    (so ``predict`` can warn when pictures look prepared otherwise); what is
    passed besides it wins.
    """
    if dataset is not None:
        from digitlab.preparation import dataset_preprocessing  # it imports this module

        input_shape = dataset.image_shape if input_shape is None else input_shape
        class_names = class_names or dataset.class_names
        preprocessing = dataset_preprocessing(dataset) if preprocessing is None else preprocessing
    if input_shape is None:
        raise TypeError("save_model needs input_shape= or dataset=")
    # np.array, not np.ascontiguousarray, which turns 0-d arrays into 1-d ones.
    state = {name: np.array(value, order="C") for name, value in model.state_dict().items()}
    info = ModelInfo(
        kind=model.kind,
        settings=json_settings(model.get_params(deep=False)),
        classes=[int(c) for c in model.classes_],
        input_shape=[int(s) for s in input_shape],
        class_names=list(class_names),
        preprocessing=preprocessing or {},
        data_fingerprint=data_fingerprint,
        extra=extra or {},
        calibration=calibration.to_metadata() if calibration is not None else {},
    )
    payload = save_tensors(state, metadata=metadata_entry(info.__dict__, state))
    with atomic_file(path) as tmp:
        tmp.write_bytes(payload)
    return info


def load_model(
    path: str | os.PathLike[str], *, kind: str | None = None
) -> tuple[DigitClassifier, ModelInfo]:
    """Read a model file; refuse other format versions, other kinds, changed bytes.

    Parameters
    ----------
    kind : str, optional
        If given, the model kind the caller expects; another kind is refused.
    """
    path = Path(path)
    header, data = _read_file(path)
    try:
        state = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error type for any bad layout
        raise DataError(path, f"damaged model file: {exc}") from None
    metadata = header.get("__metadata__")
    entry = metadata.get("digitlab") if isinstance(metadata, dict) else None
    if entry is None:
        raise DataError(path, "a safetensors file, but not a digitlab model (no digitlab metadata)")
    try:
        wrapper = json.loads(entry)
        fields = wrapper["info"]
        digest = wrapper["sha256"]
        text = json.dumps(fields, sort_keys=True)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise DataError(path, f"unreadable digitlab metadata ({exc!r})") from None
    if digest != _digest(text, state):
        raise DataError(path, "checksum mismatch: the model file was changed or damaged")
    if not isinstance(fields, dict):
        raise DataError(path, "unreadable digitlab metadata (info is not a JSON object)")
    # The version first: another version's fields need not fit ModelInfo.
    version = fields.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise DataError(
            path,
            f"model format version {version!r} is not supported "
            f"(this digitlab {__version__} reads version {FORMAT_VERSION})",
        )
    _check_keywords(path, fields, ModelInfo, "digitlab metadata fields")
    info = ModelInfo(**fields)
    _check_info(path, info)
    if kind is not None and info.kind != kind:
        raise DataError(path, f"holds a {info.kind!r} model, expected {kind!r}")
    models = readable_models()
    if info.kind not in models:
        raise DataError(path, f"unknown model kind {info.kind!r}")
    cls = models[info.kind]
    settings = renamed_settings(info.settings)
    _check_keywords(path, settings, cls, f"settings of a {info.kind!r} model")
    model = cls(**python_settings(cls, settings))
    try:
        model.load_state_dict(state)  # checks the settings, then the arrays, then sets them
    except SettingsError as exc:
        raise DataError(path, f"a {info.kind!r} model refuses its settings ({exc})") from None
    except ValueError as exc:
        raise DataError(path, f"model state does not fit a {info.kind!r} model ({exc})") from None
    _check_info_fits_state(path, info, state)
    # A model trained on dark ink on light paper was warned about that once, at fit; its
    # file's record of the training images says so, and the warning is not said again.
    appearance = info.preprocessing.get("appearance")
    background = appearance.get("background") if isinstance(appearance, dict) else None
    if isinstance(background, int | float) and not isinstance(background, bool):
        model.light_background_ = background > 127
    return model, info


def _read_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """The parsed safetensors header, and the file's bytes.

    The header's length is checked before the header is read, and the
    tensors are read only when the header accounts for the file's size: a
    large file that is not a model is refused after its first 8 bytes.
    """
    file, size = open_binary(path)  # a regular file only: never a pipe or /dev/zero
    try:
        with file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise DataError(path, "truncated: not a safetensors model file")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise DataError(path, "truncated or not a safetensors model file (bad header length)")
            raw = file.read(length)
            header = _parse_header(path, raw)
            tensor_bytes = size - 8 - length
            if _tensor_end(header) != tensor_bytes:
                raise DataError(path, f"damaged model file: its header describes "
                                f"{_tensor_end(header):,} bytes of tensors, {tensor_bytes:,} follow")
            body = file.read(tensor_bytes)
    except OSError as exc:
        raise DataError(path, f"cannot read model file: {exc.strerror or exc}") from None
    return header, prefix + raw + body


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise DataError(path, "not a safetensors model file (unreadable header)") from None
    if not isinstance(header, dict):
        raise DataError(path, "not a safetensors model file (the header is not a JSON object)")
    return header


def _tensor_end(header: dict[str, Any]) -> int:
    """Where the last tensor in a safetensors header ends (safetensors checks the layout)."""
    ends = [entry["data_offsets"][-1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict)
            and isinstance(entry.get("data_offsets"), list) and entry["data_offsets"]]
    return max((end for end in ends if isinstance(end, int)), default=0)


def _check_info(path: Path, info: ModelInfo) -> None:
    """Refuse metadata of the wrong types or values, before anything reads it."""
    types = {"kind": str, "settings": dict, "classes": list, "input_shape": list,
             "class_names": list, "preprocessing": dict, "data_fingerprint": str, "extra": dict,
             "calibration": dict, "digitlab_version": str}
    for name, expected in types.items():
        if not isinstance(getattr(info, name), expected):
            what = {dict: "an object", list: "a list", str: "a string"}[expected]
            raise DataError(path, f"unreadable digitlab metadata ({name} is not {what})")
    classes, shape, names = info.classes, info.input_shape, info.class_names
    if not classes or not all(_is_int(c, 0) for c in classes):
        raise DataError(path, f"classes must be a non-empty list of integers >= 0, got {_brief(classes)}")
    if any(b <= a for a, b in itertools.pairwise(classes)):
        raise DataError(path, f"classes must be distinct and increasing, got {_brief(classes)}")
    if len(shape) != 2 or not all(_is_int(side, 1) and side <= MAX_INPUT_SIDE for side in shape):
        raise DataError(path, f"input_shape must be [height, width], each 1 to {MAX_INPUT_SIDE}, "
                        f"got {_brief(shape)}")
    if not all(isinstance(name, str) for name in names):
        raise DataError(path, "class_names must all be strings")
    # Names are looked up by label, class_names[label], so every label needs one.
    if names and len(names) <= classes[-1]:
        raise DataError(path, f"class_names lists {len(names)} names, none for label {classes[-1]}")
    problem = metadata_problem(info.calibration)
    if problem:
        raise DataError(path, problem)


def _check_info_fits_state(path: Path, info: ModelInfo, state: dict[str, np.ndarray]) -> None:
    """The metadata's classes and input shape must be the tensors' (which the model checked)."""
    held = state["classes_"]
    if held.dtype.kind not in "iu" or held.tolist() != info.classes:
        raise DataError(path, f"metadata classes {_brief(info.classes)} disagree with the "
                        f"tensor classes_ {_brief(held.tolist())}")
    n_features = int(state["n_features_in_"])
    height, width = info.input_shape
    if height * width != n_features:
        raise DataError(path, f"input_shape {height}x{width} is {height * width} pixels, "
                        f"the model takes {n_features} features")


def _check_keywords(path: Path, given: dict[str, Any], target: Any, what: str) -> None:
    """Refuse names ``target(**given)`` does not take or needs and lacks. (Python's own
    TypeError would quote a name as it is, newlines and all: not one line.)"""
    parameters = inspect.signature(target).parameters
    unknown = sorted(set(given) - set(parameters))
    missing = [name for name, p in parameters.items() if p.default is p.empty and name not in given]
    if unknown:
        raise DataError(path, f"unknown {what} {_brief(unknown)}")
    if missing:
        raise DataError(path, f"missing {what} {_brief(missing)}")


def _is_int(value: object, least: int) -> bool:
    """An int (JSON true is not one) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _brief(values: list[Any]) -> str:
    """A list for a one-line message: its first 10 items."""
    text = json.dumps(values[:10])
    return text if len(values) <= 10 else f"{text[:-1]}, ... ({len(values)} in all)]"


def metadata_entry(info: dict[str, Any], state: dict[str, np.ndarray]) -> dict[str, str]:
    """The safetensors metadata of a model file: ``info`` and its checksum, as one entry."""
    digest = _digest(json.dumps(info, sort_keys=True), state)
    return {"digitlab": json.dumps({"info": info, "sha256": digest}, sort_keys=True)}


def _digest(text: str, state: dict[str, np.ndarray]) -> str:
    """SHA-256 over the metadata JSON and every tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(text.encode("utf-8"))
    for name in sorted(state):
        array = np.array(state[name], order="C")
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def json_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON values: tuples become lists, a Generator ``random_state`` becomes None,
    NumPy scalars (also a dict's keys and values, as ``class_weight``'s) Python ones."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, np.random.Generator):
            value = None  # the weights are stored; the generator's state is not needed
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, dict):
            value = {_python_scalar(key): _python_scalar(item) for key, item in value.items()}
        out[name] = value
    json.dumps(out)  # fail here, loudly, on a setting JSON cannot hold
    return out


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# Settings renamed since model files and run configurations were first written:
# old name -> new name (the seed took scikit-learn's name, so its checks can set it).
RENAMED_SETTINGS = {"rng": "random_state"}


def renamed_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` under today's names (:data:`RENAMED_SETTINGS`), so older files still load."""
    return {RENAMED_SETTINGS.get(name, name) if RENAMED_SETTINGS.get(name) not in settings
            else name: value for name, value in settings.items()}


def python_settings(cls: type[DigitClassifier], settings: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`json_settings` where the default shows a tuple was meant, and give a
    dict (``class_weight``) back its int keys: JSON writes every key as a string, and a
    model file's labels are ints."""
    defaults = {
        name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
    }
    return {
        name: tuple(value) if isinstance(defaults.get(name), tuple) and isinstance(value, list)
        else _int_keys(value) if isinstance(value, dict)
        else value
        for name, value in settings.items()
    }


def _int_keys(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """``{"7": 2.0}`` -> ``{7: 2.0}`` when every key reads as an int; else unchanged."""
    try:
        return {int(key): value for key, value in mapping.items()}
    except (TypeError, ValueError):
        return mapping
