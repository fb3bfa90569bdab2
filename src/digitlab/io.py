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
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from digitlab import __version__
from digitlab.atomic import atomic_file
from digitlab.errors import DataError
from digitlab.models import MODELS, DigitClassifier

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


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
    format_version: int = FORMAT_VERSION
    digitlab_version: str = __version__


def save_model(
    path: str | os.PathLike[str],
    model: DigitClassifier,
    *,
    input_shape: tuple[int, ...],
    class_names: tuple[str, ...] | list[str] = (),
    preprocessing: dict[str, Any] | None = None,
    data_fingerprint: str = "",
    extra: dict[str, Any] | None = None,
) -> ModelInfo:
    """Write ``model`` to ``path`` atomically; return the metadata written."""
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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read model file: {exc.strerror or exc}") from None
    metadata = _read_header_metadata(path, data)
    try:
        state = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error type for any bad layout
        raise DataError(path, f"damaged model file: {exc}") from None
    entry = metadata.get("digitlab")
    if entry is None:
        raise DataError(path, "a safetensors file, but not a digitlab model (no digitlab metadata)")
    try:
        wrapper = json.loads(entry)
        fields = wrapper["info"]
        digest = wrapper["sha256"]
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(path, f"unreadable digitlab metadata ({exc})") from None
    if digest != _digest(json.dumps(fields, sort_keys=True), state):
        raise DataError(path, "checksum mismatch: the model file was changed or damaged")
    try:
        info = ModelInfo(**fields)
    except TypeError as exc:
        raise DataError(path, f"unreadable digitlab metadata ({exc})") from None
    if info.format_version != FORMAT_VERSION:
        raise DataError(
            path,
            f"model format version {info.format_version} is not supported "
            f"(this digitlab {__version__} reads version {FORMAT_VERSION})",
        )
    if kind is not None and info.kind != kind:
        raise DataError(path, f"holds a {info.kind!r} model, expected {kind!r}")
    if info.kind not in MODELS:
        raise DataError(path, f"unknown model kind {info.kind!r}")
    cls = MODELS[info.kind]
    try:
        model = cls(**_python_settings(cls, info.settings)).load_state_dict(state)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"model state does not fit a {info.kind!r} model ({exc})") from None
    return model, info


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


def _read_header_metadata(path: Path, data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header: u64 length, then that much JSON."""
    if len(data) < 8:
        raise DataError(path, "truncated: not a safetensors model file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise DataError(path, "truncated or not a safetensors model file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, UnicodeDecodeError):
        raise DataError(path, "not a safetensors model file (unreadable header)") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def json_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON values: tuples become lists, a Generator ``rng`` becomes None."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, np.random.Generator):
            value = None  # the weights are stored; the generator's state is not needed
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[name] = value
    json.dumps(out)  # fail here, loudly, on a setting JSON cannot hold
    return out


def _python_settings(cls: type[DigitClassifier], settings: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`json_settings` where the default shows a tuple was meant."""
    defaults = {
        name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
    }
    return {
        name: tuple(value) if isinstance(defaults.get(name), tuple) and isinstance(value, list)
        else value
        for name, value in settings.items()
    }
