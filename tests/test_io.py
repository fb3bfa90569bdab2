"""Model files: safetensors + JSON metadata, atomic, and refused when wrong."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import load as load_tensors
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


@pytest.mark.parametrize("kind", sorted(k for k, cls in MODELS.items()
                                  if "class_weight" in cls().get_params()))
@pytest.mark.parametrize("class_weight", ["balanced", {1: 3.0}, {np.int64(0): np.float32(0.5)}])
def test_class_weight_round_trips(kind, class_weight, binary, seeded_model, tmp_path) -> None:
    # JSON writes dict keys as strings: the file's {"1": 3.0} must come back as {1: 3.0}.
    model = seeded_model(kind).set_params(class_weight=class_weight)
    model.fit(binary.features("train"), binary.train_labels)
    path = tmp_path / "model.safetensors"
    save_model(path, model, input_shape=(28, 28))
    loaded, _info = load_model(path)
    assert loaded.get_params() == model.get_params()
    assert all(type(key) is int for key in getattr(loaded.class_weight, "keys", list)())
    X = binary.features("test")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


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


# ---------------------------------------------------------------- files with a valid checksum
# Anyone can recompute the checksum, so a file whose checksum is right but whose
# metadata and tensors disagree must be refused, for every model kind.


def _read(path):
    """The ``info`` dict and the tensors of a model file."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return json.loads(header["__metadata__"]["digitlab"])["info"], load_tensors(data)


def _sign(path, info, state):
    """Write ``info`` and ``state`` as a model file with a valid checksum, as save_model does."""
    # C order, as save_model: safetensors writes a strided view's memory, not its values.
    state = {name: np.array(value, order="C") for name, value in state.items()}
    path.write_bytes(save_tensors(state, metadata=metadata_entry(info, state)))


@pytest.fixture(scope="module")
def saved_kinds(sample, seeded_model, tmp_path_factory):
    """Per kind: a model fitted on 200 real digits, saved; its file, the model, test features."""
    folder = tmp_path_factory.mktemp("kinds")
    out = {}
    for kind in sorted(MODELS):
        data = sample.for_task("is-2") if MODELS[kind].binary_only else sample
        data = data.take("train", 0, 200).take("test", 0, 50)
        model = seeded_model(kind).fit(data.features("train"), data.train_labels)
        assert len(model.classes_) == (2 if MODELS[kind].binary_only else 10)
        path = folder / f"{kind}.safetensors"
        save_model(path, model, input_shape=data.image_shape, class_names=data.class_names,
                   extra={"task": data.task})
        out[kind] = (path, model, data.features("test"))
    return out


def _learned(state, *, floats=False):
    """The largest learned array's name (not classes_ / n_features_in_); None if there is none."""
    names = [name for name in state if name not in ("classes_", "n_features_in_")
             and (not floats or state[name].dtype.kind == "f")]
    return max(names, key=lambda name: (state[name].size, name), default=None)


def _replace(state, name, value):
    return {**state, name: np.asarray(value)}


def _with_first(state, name, number):
    array = state[name].copy()
    array.flat[0] = number
    return _replace(state, name, array)


def _narrower(array):
    """One entry fewer along the last axis; a 0-d array becomes 1-d."""
    return array.reshape(1) if array.ndim == 0 else array[..., :-1]


def _other_ndim(array):
    """0-d where the model expects 1-d or 2-d, and (1, 1) where it expects 0-d."""
    return array.reshape(1, 1) if array.ndim == 0 else np.asarray(array.flat[0])


# Metadata corruptions: info -> info.
INFO_CORRUPTIONS = {
    "input_shape empty": lambda info: {**info, "input_shape": []},
    "input_shape disagrees with the weights": lambda info: {**info, "input_shape": [20, 20]},
    "input_shape one side": lambda info: {**info, "input_shape": [784]},
    "input_shape three sides": lambda info: {**info, "input_shape": [28, 28, 1]},
    "input_shape negative": lambda info: {**info, "input_shape": [-28, -28]},
    "input_shape floats": lambda info: {**info, "input_shape": [28.0, 28.0]},
    "input_shape strings": lambda info: {**info, "input_shape": ["28", "28"]},
    "input_shape a string": lambda info: {**info, "input_shape": "28x28"},
    "classes disagree with the tensor": lambda info: {**info, "classes": [*info["classes"][:-1], 11],
                                                      "class_names": []},
    "classes floats": lambda info: {**info, "classes": [float(c) for c in info["classes"]]},
    "classes strings": lambda info: {**info, "classes": [str(c) for c in info["classes"]]},
    "classes a bool": lambda info: {**info, "classes": [False, *info["classes"][1:]]},
    "classes empty": lambda info: {**info, "classes": []},
    "class_names too few": lambda info: {**info, "class_names": ["zero"]},
    "class_names not strings": lambda info: {**info, "class_names": list(range(10))},
    "class_names a string": lambda info: {**info, "class_names": "0123456789"},
    "kind unknown": lambda info: {**info, "kind": "svm"},
    "kind not a string": lambda info: {**info, "kind": ["mlp"]},
    "settings unknown": lambda info: {**info, "settings": {**info["settings"], "colour": "red"}},
    "settings unknown, a newline in its name": lambda info: {**info, "settings": {"a\nb": 1}},
    "field unknown": lambda info: {**info, "colour\nred": 1},
    "field missing": lambda info: {k: v for k, v in info.items() if k != "input_shape"},
    "settings a list": lambda info: {**info, "settings": []},
    "preprocessing a list": lambda info: {**info, "preprocessing": []},
    "extra a string": lambda info: {**info, "extra": "all"},
    "info a list": lambda info: [info],
    "header over 1 MB": lambda info: {**info, "extra": {"pad": "x" * 1_000_000}},
    "calibration a list": lambda info: {**info, "calibration": [1.5]},
    "calibration temperature negative": lambda info: _calibrated(info, temperature=-1.0),
    "calibration temperature NaN": lambda info: _calibrated(info, temperature=float("nan")),
    "calibration temperature a string": lambda info: _calibrated(info, temperature="1.5"),
    "calibration ece above 1": lambda info: _calibrated(info, ece_after=2.0),
    "calibration n a bool": lambda info: _calibrated(info, n=True),
    "calibration field unknown": lambda info: _calibrated(info, colour="red"),
}


def _calibrated(info, **change):
    """``info`` with a calibration entry, valid but for ``change``."""
    entry = {"temperature": 1.5, "ece_before": 0.1, "ece_after": 0.02, "n": 300, "bins": 15,
             "split": "validation"}
    return {**info, "calibration": {**entry, **change}}

# Tensor corruptions: state -> state (None: not applicable to this kind's arrays).
STATE_CORRUPTIONS = {
    "tensor missing": lambda s: {k: v for k, v in s.items() if k != _learned(s)},
    "tensor extra": lambda s: {**s, "bonus_": np.zeros(3, np.float32)},
    "tensor one column short": lambda s: _replace(s, _learned(s), _narrower(s[_learned(s)])),
    "tensor of other ndim": lambda s: _replace(s, _learned(s), _other_ndim(s[_learned(s)])),
    "n_features_in_ disagrees": lambda s: _replace(s, "n_features_in_", np.int64(783)),
    "n_features_in_ a float": lambda s: _replace(s, "n_features_in_", np.float64(784)),
    "n_features_in_ 2-d": lambda s: _replace(s, "n_features_in_", np.full((1, 1), 784)),
    "classes_ floats": lambda s: _replace(s, "classes_", s["classes_"].astype(np.float64)),
    "weights NaN": lambda s: _learned(s, floats=True) and _with_first(s, _learned(s, floats=True), np.nan),
    "weights infinite": lambda s: _learned(s, floats=True) and _with_first(s, _learned(s, floats=True), -np.inf),
    "weights float16": lambda s: _learned(s, floats=True) and _replace(
        s, _learned(s, floats=True), s[_learned(s, floats=True)].astype(np.float16)),
    "weights integers": lambda s: _learned(s, floats=True) and _replace(
        s, _learned(s, floats=True), s[_learned(s, floats=True)].astype(np.int32)),
}

# Both at once, consistently: the tensors and the metadata agree, the model does not.
CLASS_CORRUPTIONS = {
    "one class more": lambda c: [*c, c[-1] + 1],
    "one class fewer": lambda c: c[:-1],
    "negative classes": lambda c: [value - 1 for value in c],
    "classes not increasing": lambda c: c[::-1],
    "classes repeated": lambda c: [c[0], *c[:-1]],
}

# Kinds whose arrays do not depend on the number of classes (the seed of the scores).
CLASS_FREE = {"random"}
# Settings each kind refuses, and settings that give other shapes than the tensors'.
BAD_SETTINGS = {
    "random": {"random_state": -1},
    "template": {"metric": "cosine"},
    "guess-and-check": {"n_candidates": 0},
    "perceptron": {"epochs": 0},
    "softmax": {"optimizer": "lbfgs"},
    "mlp": {"hidden": [-5]},
    "cnn": {"width": 0},
}
SHAPING_SETTINGS = {"mlp": {"hidden": [7]}, "cnn": {"dense": 64}}
# Values a model divides by or seeds with.
BAD_VALUES = {
    "random": ("seed_", -1),
    "majority": ("class_prior_", -0.5),
    "template": ("temperature_", 0.0),
    "perceptron": ("temperature_", -1.0),
}


def _corruptions(kind, info, state):
    """(name, info, state) of every corruption that applies to this kind's file."""
    out = [(name, change(info), state) for name, change in INFO_CORRUPTIONS.items()]
    for name, change in STATE_CORRUPTIONS.items():
        changed = change(state)
        if changed is not None:
            out.append((name, info, changed))
    for name, change in CLASS_CORRUPTIONS.items():
        if kind in CLASS_FREE and name in ("one class more", "one class fewer"):
            continue  # a random model of 9 or 11 classes is still a random model
        classes = change(info["classes"])
        out.append((name, {**info, "classes": classes, "class_names": []},
                    _replace(state, "classes_", np.array(classes, dtype=np.int64))))
    out.append(("huge input_shape", {**info, "input_shape": [2048, 2048]},
                _replace(state, "n_features_in_", np.int64(2048 * 2048))))
    if kind in BAD_SETTINGS:
        out.append(("setting refused", {**info, "settings": {**info["settings"], **BAD_SETTINGS[kind]}},
                    state))
    if kind in SHAPING_SETTINGS:
        settings = {**info["settings"], **SHAPING_SETTINGS[kind]}
        out.append(("settings give other shapes", {**info, "settings": settings}, state))
    if kind in BAD_VALUES:
        out.append(("bad value", info, _with_first(state, *BAD_VALUES[kind])))
    return out


def test_every_corruption_changes_the_file(saved_kinds, tmp_path) -> None:
    # The corruptions are real: re-signing untouched info and state gives the saved bytes.
    for path, _model, _X in saved_kinds.values():
        info, state = _read(path)
        copy = tmp_path / path.name
        _sign(copy, info, state)
        assert copy.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_signed_files_that_disagree_with_themselves_are_refused(kind, saved_kinds,
                                                                tmp_path) -> None:
    path, model, X = saved_kinds[kind]
    info, state = _read(path)
    cases = _corruptions(kind, info, state)
    assert len(cases) >= 35
    answers = {}
    for number, (name, bad_info, bad_state) in enumerate(cases):
        bad = tmp_path / f"bad{number}.safetensors"
        _sign(bad, bad_info, bad_state)
        try:
            load_model(bad)
            answers[name] = "accepted"
        except DataError as exc:
            message = str(exc)
            good = bad.name in message and "\n" not in message and "checksum" not in message
            answers[name] = "ok" if good else message
    assert {name: answer for name, answer in answers.items() if answer != "ok"} == {}
    # ... and the untampered file still loads and predicts as the model did.
    loaded, _ = load_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("softmax", lambda i, s: (i, _replace(s, "coef_", s["coef_"][:783])),
         r"coef_ has shape \(783, 10\), expected \(784, 10\)"),
        ("softmax", lambda i, s: ({**i, "input_shape": [20, 20]}, s),
         "input_shape 20x20 is 400 pixels, the model takes 784 features"),
        ("mlp", lambda i, s: ({k: v for k, v in s.items() if k != "b2"} and i,
                              {k: v for k, v in s.items() if k != "b2"}),
         r"state is missing \['b2'\]"),
        ("mlp", lambda i, s: ({**i, "settings": {**i["settings"], "hidden": [7]}}, s),
         r"layer sizes \(784, 7, 10\)"),
        ("template", lambda i, s: (i, _with_first(s, "templates_", np.nan)),
         "templates_ holds NaN or infinite values"),
        ("template", lambda i, s: ({**i, "settings": {"metric": "cosine"}}, s),
         "refuses its settings .metric must be"),
        ("perceptron", lambda i, s: (i, _replace(s, "coef_", s["coef_"].astype(np.float16))),
         "coef_ has dtype float16, expected float32 or float64"),
        ("cnn", lambda i, s: ({**i, "settings": {**i["settings"], "width": 8}}, s),
         "width=8, dense=128 for 28x28 images"),
        ("guess-and-check", lambda i, s: ({**i, "classes": [0, 1, 2], "class_names": []},
                                          _replace(s, "classes_", np.arange(3))),
         "holds exactly 2 classes, the state has 3"),
        ("majority", lambda i, s: ({**i, "class_names": ["a", "b"]}, s),
         "class_names lists 2 names, none for label 9"),
        ("majority", lambda i, s: ({**i, "kind": "svm"}, s), "unknown model kind 'svm'"),
    ],
)
def test_refusals_say_what_is_wrong(kind, change, message, saved_kinds, tmp_path) -> None:
    info, state = _read(saved_kinds[kind][0])
    bad = tmp_path / "bad.safetensors"
    _sign(bad, *change(info, state))
    with pytest.raises(DataError, match=message):
        load_model(bad)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_float64_weights_are_read(kind, saved_kinds, tmp_path) -> None:
    # Not refused: float64 is what MLP.from_sklearn holds, and it computes the same.
    path, model, X = saved_kinds[kind]
    info, state = _read(path)
    wide = {name: value.astype(np.float64) if value.dtype.kind == "f" else value
            for name, value in state.items()}
    copy = tmp_path / "float64.safetensors"
    _sign(copy, info, wide)
    loaded, _ = load_model(copy)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-5)


def _raw_file(path, header: bytes, body: bytes = b"") -> None:
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)


def test_deeply_nested_json_is_refused(tmp_path) -> None:
    # Python's JSON parser raises RecursionError, not ValueError, on deep nesting.
    nested = tmp_path / "nested.safetensors"
    _raw_file(nested, b"[" * 100_000)
    with pytest.raises(DataError, match=r"nested\.safetensors.*unreadable header"):
        load_model(nested)
    entry = json.dumps({"__metadata__": {"digitlab": "[" * 100_000}}).encode()
    _raw_file(nested, entry)
    with pytest.raises(DataError, match="unreadable digitlab metadata"):
        load_model(nested)


def test_header_larger_than_the_limit_is_refused_unread(tmp_path) -> None:
    big = tmp_path / "big.safetensors"
    _raw_file(big, b'{"__metadata__": {"pad": "' + b"x" * 1_000_000 + b'"}}')
    with pytest.raises(DataError, match="bad header length"):
        load_model(big)


def test_header_must_account_for_the_file(saved_kinds, tmp_path) -> None:
    path = saved_kinds["template"][0]
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(path.read_bytes() + b"\0" * 64)
    with pytest.raises(DataError, match=r"longer\.safetensors: damaged model file"):
        load_model(longer)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(
    "change",
    [
        lambda i, s: ({**i, "input_shape": [20, 20]}, s),
        lambda i, s: ({**i, "input_shape": []}, s),
        lambda i, s: (i, _replace(s, _learned(s), _narrower(s[_learned(s)]))),
        lambda i, s: ({**i, "class_names": ["zero"]}, s),
    ],
    ids=["input_shape 20x20", "input_shape empty", "tensor short", "class_names short"],
)
@pytest.mark.parametrize("kind", ["softmax", "mlp", "cnn", "random"])
def test_cli_answers_a_bad_model_file_in_one_line(kind, change, command, saved_kinds, sample,
                                                  tmp_path, capsys) -> None:
    from PIL import Image

    from digitlab.cli import main

    info, state = _read(saved_kinds[kind][0])
    bad = tmp_path / "tampered.safetensors"
    _sign(bad, *change(info, state))
    image = tmp_path / "digit.png"
    Image.fromarray(sample.test_images[0]).save(image)
    argv = [command, str(bad), str(image)] if command == "predict" else [command, str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "checksum" not in err  # the file is signed: refused for what it holds
    assert err.count("\n") == 1, err
    assert "tampered.safetensors" in err
    assert "Traceback" not in err


def test_a_model_path_that_is_a_pipe_or_a_device_is_refused_unread(tmp_path) -> None:
    import os

    pipe = tmp_path / "model.safetensors"
    os.mkfifo(pipe)  # opening it to read would wait for a writer forever
    with pytest.raises(DataError, match=r"model\.safetensors: is a named pipe"):
        load_model(pipe)
    device = tmp_path / "zero.safetensors"
    device.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"zero\.safetensors: is a character device"):
        load_model(device)


def test_guess_and_check_files_from_before_the_engine_setting_load(saved_kinds, tmp_path) -> None:
    # Files written before GuessAndCheck had ``engine`` hold no such setting.
    path, model, X = saved_kinds["guess-and-check"]
    info, state = _read(path)
    assert info["settings"].pop("engine") == "fast"
    older = tmp_path / "older.safetensors"
    _sign(older, info, state)
    loaded, _ = load_model(older)
    assert loaded.get_params()["engine"] == "fast"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.coef_, model.coef_)


@pytest.mark.parametrize("kind", ["random", "softmax", "mlp", "cnn"])
def test_files_from_before_random_state_load_with_their_rng_seed(kind, saved_kinds, tmp_path) -> None:
    # The seed setting was called ``rng`` before it took scikit-learn's name.
    path, model, X = saved_kinds[kind]
    info, state = _read(path)
    info["settings"]["rng"] = info["settings"].pop("random_state")
    assert info["settings"]["rng"] == 0
    older = tmp_path / "older.safetensors"
    _sign(older, info, state)
    loaded, _ = load_model(older)
    assert loaded.get_params()["random_state"] == 0
    assert "rng" not in loaded.get_params()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_save_model_takes_the_dataset_for_shape_names_and_record(sample, tmp_path) -> None:
    from digitlab.preparation import trained_appearance

    model = Template().fit(sample.features("train"), sample.train_labels)
    info = save_model(tmp_path / "m.safetensors", model, dataset=sample)
    assert info.input_shape == [28, 28]
    assert info.class_names == list(sample.class_names)
    _loaded, read = load_model(tmp_path / "m.safetensors")
    assert trained_appearance(read) is not None  # predict can warn of pictures prepared otherwise
    assert read.preprocessing["image_shape"] == [28, 28]
    with pytest.raises(TypeError, match="input_shape= or dataset="):
        save_model(tmp_path / "n.safetensors", model)
    assert not (tmp_path / "n.safetensors").exists()
