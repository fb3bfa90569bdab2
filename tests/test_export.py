"""ONNX export: every model kind runs in onnxruntime and reads digits as digitlab does."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

# Skipped where the onnx extra is not installed, but never in CI, which installs it (test extra).
if os.environ.get("CI"):
    ort = importlib.import_module("onnxruntime")
    onnx = importlib.import_module("onnx")
else:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")

from digitlab.cli import main
from digitlab.errors import DataWarning
from digitlab.export import INPUT, OUTPUTS, export_onnx
from digitlab.io import load_model, save_model
from digitlab.models import MODELS

# Largest difference allowed between onnxruntime's probabilities and predict_proba. The
# graphs redo each model's arithmetic in its own precision; what differs is the order of
# float32 sums (BLAS against onnxruntime's kernels) and the float32 output. Measured on
# these models: at most 3e-6 (templates, whose temperature scales float32 dot products up),
# 1e-7 for the others, 1e-8 for the CNN.
ATOL = {"numpy": 1e-5, "cnn": 1e-4}

# name -> (kind, settings, task): every kind, and each branch of the graphs (two classes
# against ten, each output and activation, the CNN with test-time augmentation).
CASES = {
    "majority": ("majority", {}, "all"),
    "template-dot": ("template", {}, "all"),
    "template-euclidean": ("template", {"metric": "euclidean"}, "all"),
    "softmax": ("softmax", {"epochs": 3, "random_state": 0}, "all"),
    "softmax-binary": ("softmax", {"epochs": 3, "random_state": 0}, "is-2"),
    "mlp-relu-softmax": ("mlp", {"hidden": (16,), "epochs": 3, "random_state": 0}, "all"),
    "mlp-sigmoid-sigmoids": ("mlp", {"hidden": (16, 8), "activation": "sigmoid", "output": "sigmoid",
                                     "loss": "squared-distance", "epochs": 3, "random_state": 0}, "all"),
    "mlp-tanh-one-sigmoid": ("mlp", {"hidden": (16,), "activation": "tanh", "output": "sigmoid",
                                     "loss": "binary-cross-entropy", "epochs": 3, "random_state": 0}, "is-2"),
    "mlp-identity-none": ("mlp", {"hidden": (), "activation": "identity", "epochs": 3, "random_state": 0},
                          "all"),
    "perceptron": ("perceptron", {"epochs": 3, "random_state": 0}, "all"),
    "perceptron-binary": ("perceptron", {"epochs": 3, "random_state": 0}, "is-2"),
    "guess-and-check": ("guess-and-check", {"n_candidates": 200, "random_state": 0}, "is-2"),
    "cnn": ("cnn", {"epochs": 1, "width": 4, "dense": 16, "random_state": 0}, "all"),
    "cnn-tta": ("cnn", {"epochs": 1, "width": 4, "dense": 16, "tta": True, "random_state": 0}, "all"),
}


@pytest.fixture(scope="module")
def splits(sample):
    """400 training and 300 test digits of the bundled sample."""
    data = sample.take("train", 0, 400).take("test", 0, 300)
    return data.features("train"), data.train_labels, data.features("test"), data.class_names


def _labels(y: np.ndarray, task: str) -> np.ndarray:
    return (y == 2).astype(np.int64) if task == "is-2" else y


def _saved(tmp_path: Path, splits, kind: str, settings: dict, task: str) -> Path:
    if kind not in MODELS:  # the CNN, without torch outside CI
        pytest.skip(f"{kind} needs an extra that is not installed")
    X, y, _, names = splits
    model = MODELS[kind](**settings).fit(X, _labels(y, task))
    path = tmp_path / f"{kind}.safetensors"
    save_model(path, model, input_shape=(28, 28), class_names=names if task == "all" else
               ("not 2", "2"), preprocessing={"deskew": False, "features": "pixel / 255"},
               extra={"task": task})
    return path


def _run(path: Path, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities, label = session.run(list(OUTPUTS), {INPUT: X})
    return probabilities, label


def test_every_model_kind_is_covered() -> None:
    kinds = {kind for kind, _, _ in CASES.values()} | {"random"}  # random: its own test below
    assert set(MODELS) - {"cnn"} <= kinds
    assert "cnn" in kinds


@pytest.mark.parametrize("name", list(CASES))
def test_onnxruntime_reads_digits_as_digitlab_does(name: str, splits, tmp_path: Path) -> None:
    kind, settings, task = CASES[name]
    path = _saved(tmp_path, splits, kind, settings, task)
    out = tmp_path / "model.onnx"
    exported = export_onnx(path, out)
    assert exported.n_bytes == out.stat().st_size > 0
    model, _ = load_model(path)
    X_test = splits[2]
    probabilities, label = _run(out, X_test)
    assert probabilities.dtype == np.float32
    assert label.dtype == np.int64
    assert probabilities.shape == (len(X_test), len(model.classes_))
    expected = model.predict_proba(X_test)
    atol = ATOL["cnn" if kind == "cnn" else "numpy"]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=atol)
    np.testing.assert_array_equal(label, model.predict(X_test))
    # Any number of rows, one included (the batch size is not fixed in the file).
    one_p, one_label = _run(out, X_test[:1])
    np.testing.assert_allclose(one_p, expected[:1], rtol=0, atol=atol)
    assert one_label.tolist() == model.predict(X_test[:1]).tolist()


def test_the_random_baseline_draws_scores_of_the_same_law(splits, tmp_path: Path) -> None:
    """Its scores are a 64-bit hash of each image, which ONNX cannot compute: the graph
    draws k uniform scores per image instead, softmaxed as the model's."""
    path = _saved(tmp_path, splits, "random", {"random_state": 5}, "all")
    out = tmp_path / "random.onnx"
    export_onnx(path, out)
    # Distinct images: the model gives equal images equal scores.
    X = np.random.default_rng(0).random((3000, 784), dtype=np.float32)
    probabilities, label = _run(out, X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    # softmax of numbers in [0, 1): no probability is e times another one of its row
    ratio = probabilities.max(axis=1) / probabilities.min(axis=1)
    assert ratio.max() < np.e
    assert np.array_equal(label, np.argmax(probabilities, axis=1))  # classes 0..9
    # every class about as often, like the model's own answers (300 +- 5 sigma each)
    counts = np.bincount(label, minlength=10)
    assert counts.min() > 300 - 5 * 16
    assert counts.max() < 300 + 5 * 16
    model, _ = load_model(path)
    ours = model.predict_proba(X).max(axis=1)
    assert abs(probabilities.max(axis=1).mean() - ours.mean()) < 0.002


def test_the_file_says_how_to_prepare_its_input(splits, tmp_path: Path) -> None:
    path = _saved(tmp_path, splits, "template", {}, "is-2")
    out = tmp_path / "t.onnx"
    export_onnx(path, out)
    proto = onnx.load(str(out))
    props = {entry.key: entry.value for entry in proto.metadata_props}
    _, info = load_model(path)
    assert props["digitlab.kind"] == "template"
    assert props["digitlab.task"] == "is-2"
    assert json.loads(props["digitlab.preprocessing"]) == info.preprocessing
    assert json.loads(props["digitlab.classes"]) == [0, 1]
    assert json.loads(props["digitlab.class_names"]) == ["not 2", "2"]
    assert json.loads(props["digitlab.input_shape"]) == [28, 28]
    assert "pixels / 255" in props["digitlab.input"]
    assert "light ink" in props["digitlab.input"]
    assert props["digitlab.version"] == importlib.import_module("digitlab").__version__
    assert props["digitlab.trained_with"] == info.digitlab_version
    assert proto.producer_name == "digitlab"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT]
    assert session.get_inputs()[0].shape[1] == 784
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)


def test_cli_exports_a_model(splits, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _saved(tmp_path, splits, "softmax", {"epochs": 2, "random_state": 0}, "all")
    out = tmp_path / "deploy" / "digits.onnx"  # its folder is made
    assert main(["export", str(path), "--onnx", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out
    assert printed.err == ""
    model, _ = load_model(path)
    probabilities, _ = _run(out, splits[2][:5])
    np.testing.assert_allclose(probabilities, model.predict_proba(splits[2][:5]), atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.onnx"]  # no temporary left


def test_a_cnn_on_features_that_are_not_a_square_image_exports(splits, tmp_path: Path) -> None:
    """The graph pads the features to the network's square image as CNN does (10 -> 4x4)."""
    if "cnn" not in MODELS:
        pytest.skip("cnn needs an extra that is not installed")
    X, y, X_test, _ = splits
    with pytest.warns(DataWarning, match="laid out in a 4x4 image"):
        model = MODELS["cnn"](epochs=1, width=2, dense=4, random_state=0).fit(X[:, 300:310], y)
    path = tmp_path / "cnn.safetensors"
    save_model(path, model, input_shape=(2, 5))
    export_onnx(path, tmp_path / "cnn.onnx")
    probabilities, label = _run(tmp_path / "cnn.onnx", X_test[:, 300:310])
    np.testing.assert_allclose(probabilities, model.predict_proba(X_test[:, 300:310]), rtol=0,
                               atol=ATOL["cnn"])
    np.testing.assert_array_equal(label, model.predict(X_test[:, 300:310]))


def test_cli_exports_a_cnn_without_noise(splits, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """torch's exporter logs and warns about its own internals: none of it reaches the user."""
    path = _saved(tmp_path, splits, "cnn", {"epochs": 1, "width": 2, "dense": 4, "random_state": 0}, "all")
    assert main(["export", str(path), "--onnx", str(tmp_path / "cnn.onnx")]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("wrote ")
    assert printed.out.count("\n") == 1
    assert printed.err == ""


def test_bad_model_file_is_one_line_and_exit_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a model")
    out = tmp_path / "out.onnx"
    assert main(["export", str(bad), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"digitlab: error: {bad}:")
    assert err.count("\n") == 1
    assert main(["export", str(tmp_path / "missing.safetensors"), "--onnx", str(out)]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_export_never_overwrites_its_model(splits, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _saved(tmp_path, splits, "majority", {}, "all")
    before = path.read_bytes()
    assert main(["export", str(path), "--onnx", str(tmp_path / "." / path.name)]) == 2
    assert "is the model file itself" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_destination_is_checked_before_the_model_is_read(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    # The model does not exist either: the destination's problem is found first.
    code = main(["export", str(tmp_path / "missing.safetensors"), "--onnx",
                 str(blocker / "out.onnx")])
    assert code == 2
    err = capsys.readouterr().err
    assert "out.onnx" in err
    assert "not a folder" in err
    assert err.count("\n") == 1


def test_a_failed_export_leaves_nothing(splits, tmp_path: Path, monkeypatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _saved(tmp_path, splits, "majority", {}, "all")
    out = tmp_path / "out.onnx"
    out.write_bytes(b"an older export")

    def disk_full(proto, where, *args, **kwargs):
        Path(where).write_bytes(proto.SerializeToString()[:100])  # half written, then:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", disk_full)
    assert main(["export", str(path), "--onnx", str(out)]) == 2
    assert "out.onnx: cannot write (No space left on device)" in capsys.readouterr().err
    assert out.read_bytes() == b"an older export"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["majority.safetensors", "out.onnx"]


@pytest.mark.parametrize(("missing", "kind"), [("onnx", "majority"), ("onnxscript", "cnn")])
def test_a_missing_extra_is_one_line(missing: str, kind: str, splits, tmp_path: Path,
                                     monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = {"epochs": 1, "width": 2, "dense": 4, "random_state": 0} if kind == "cnn" else {}
    path = _saved(tmp_path, splits, kind, settings, "all")
    monkeypatch.setitem(sys.modules, missing, None)  # import onnx(script) fails as if absent
    assert main(["export", str(path), "--onnx", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'digitlab[onnx]'" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(("kind", "settings", "tie_goes_to"), [
    ("guess-and-check", {"n_candidates": 20, "random_state": 0}, 1),  # w.x + b >= 0 is class 1
    ("perceptron", {"epochs": 1, "random_state": 0}, 1),
    ("softmax", {"epochs": 1, "random_state": 0}, 0),  # scores (0, z): argmax keeps class 0 at z = 0
    ("mlp", {"hidden": (4,), "output": "sigmoid", "loss": "binary-cross-entropy", "epochs": 1,
             "random_state": 0}, 0),
])
def test_a_score_of_exactly_zero_goes_the_models_way(kind: str, settings: dict, tie_goes_to: int,
                                                     splits, tmp_path: Path) -> None:
    """Two-class models decide on one score; at exactly 0 each has its own rule."""
    X, y, X_test, _ = splits
    model = MODELS[kind](**settings).fit(X, _labels(y, "is-2"))
    state = model.state_dict()
    last = sorted(name for name in state if name.startswith(("coef_", "intercept_", "W", "b")))
    state.update({name: np.zeros_like(state[name]) for name in last})  # every score is 0
    model.load_state_dict(state)
    assert model.predict(X_test[:3]).tolist() == [tie_goes_to] * 3
    path = tmp_path / "tie.safetensors"
    save_model(path, model, input_shape=(28, 28), extra={"task": "is-2"})
    export_onnx(path, tmp_path / "tie.onnx")
    probabilities, label = _run(tmp_path / "tie.onnx", X_test[:3])
    assert label.tolist() == [tie_goes_to] * 3
    np.testing.assert_allclose(probabilities, 0.5)


@pytest.mark.parametrize("name", ["softmax", "mlp-relu-softmax", "template-dot", "cnn"])
def test_the_calibration_temperature_is_in_the_graph(name: str, splits, tmp_path: Path) -> None:
    """The file serves the probabilities digitlab serves: the model's, at its temperature."""
    from digitlab.calibration import Calibration, scale

    kind, settings, task = CASES[name]
    if kind not in MODELS:
        pytest.skip(f"{kind} needs an extra that is not installed")
    X, y, X_test, names = splits
    model = MODELS[kind](**settings).fit(X, _labels(y, task))
    path = tmp_path / "calibrated.safetensors"
    save_model(path, model, input_shape=(28, 28), class_names=names, extra={"task": task},
               calibration=Calibration(temperature=0.5, ece_before=0.1, ece_after=0.05, n=100))
    out = tmp_path / "calibrated.onnx"
    export_onnx(path, out)
    probabilities, label = _run(out, X_test)
    expected = scale(model.predict_proba(X_test), 0.5)
    assert not np.allclose(expected, model.predict_proba(X_test), atol=1e-3)  # T matters here
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=ATOL["cnn" if kind == "cnn" else "numpy"])
    np.testing.assert_array_equal(label, model.predict(X_test))
    stored = onnx.load(str(out))
    assert {p.key: p.value for p in stored.metadata_props}["digitlab.temperature"] == "0.5"
