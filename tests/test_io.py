"""Model files: safetensors + JSON metadata, atomic, and refused when wrong."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save as save_tensors

from digitlab.errors import DataError
from digitlab.io import FORMAT_VERSION, load_model, metadata_entry, save_model
from digitlab.models import MODELS, Template


@pytest.fixture(scope="module")
def binary(sample):
    data = sample.for_task("is-2").take("train", 0, 400).take("test", 0, 100)
    return data




def _template(data):
    return Template().fit(data.features("train"), data.train_labels)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_model_round_trips_to_identical_predictions(kind, binary, seeded_model,
                                                         tmp_path) -> None:
    model = seeded_model(kind).fit(binary.features("train"), binary.train_labels)
    path = tmp_path / "model.safetensors"
    info = save_model(path, model, input_shape=(28, 28), class_names=("not 2", "2"),
                      preprocessing={"scale": "x / 255"}, data_fingerprint=binary.fingerprint())
    loaded, loaded_info = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    X = binary.features("test")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded_info == info
    assert loaded_info.kind == kind
    assert loaded_info.input_shape == [28, 28]
    assert loaded_info.class_names == ["not 2", "2"]
    assert loaded_info.data_fingerprint == binary.fingerprint()
    assert loaded_info.format_version == FORMAT_VERSION


def test_same_model_gives_the_same_bytes(binary, tmp_path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(a, _template(binary), input_shape=(28, 28))
    save_model(b, _template(binary), input_shape=(28, 28))
    assert a.read_bytes() == b.read_bytes()


@pytest.fixture
def saved(binary, tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(path, _template(binary), input_shape=(28, 28))
    return path


def test_flipped_tensor_byte_is_refused(saved) -> None:
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data
    saved.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_model(saved)


def test_edited_metadata_is_refused(saved) -> None:
    data = saved.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    wrapper = json.loads(header["__metadata__"]["digitlab"])
    wrapper["info"]["classes"] = [1, 0]  # swap the classes, keep the header valid JSON
    header["__metadata__"]["digitlab"] = json.dumps(wrapper, sort_keys=True)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    saved.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + length :])
    with pytest.raises(DataError, match="checksum mismatch"):
        load_model(saved)


@pytest.mark.parametrize("keep", [0, 7, 100, -10])
def test_truncated_file_is_refused(saved, keep) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(DataError, match=str(saved.name)):
        load_model(saved)


def test_other_format_version_is_refused(binary, tmp_path) -> None:
    model = _template(binary)
    state = model.state_dict()
    meta = {"kind": "template", "settings": {"metric": "dot"}, "classes": [0, 1],
            "input_shape": [28, 28], "format_version": FORMAT_VERSION + 1}
    path = tmp_path / "future.safetensors"
    path.write_bytes(save_tensors(state, metadata=metadata_entry(meta, state)))
    with pytest.raises(DataError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_model(path)


def test_other_kind_is_refused_when_a_kind_is_expected(saved) -> None:
    with pytest.raises(DataError, match="holds a 'template' model, expected 'mlp'"):
        load_model(saved, kind="mlp")
    model, _ = load_model(saved, kind="template")
    assert isinstance(model, Template)


def test_plain_safetensors_and_pickles_are_refused(tmp_path) -> None:
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save_tensors({"w": np.zeros(3, np.float32)}))
    with pytest.raises(DataError, match="not a digitlab model"):
        load_model(plain)
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("boom",))

    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError):
        load_model(pickled)
    assert not marker.exists()


def test_failed_save_leaves_nothing(binary, tmp_path, monkeypatch) -> None:
    import digitlab.io as io_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    path = tmp_path / "m.safetensors"
    model = _template(binary)
    monkeypatch.setattr(io_module, "save_tensors", lambda *a, **k: b"x" * 10)
    monkeypatch.setattr(io_module.Path, "write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, model, input_shape=(28, 28))
    assert list(tmp_path.iterdir()) == []
