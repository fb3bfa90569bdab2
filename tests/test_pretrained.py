"""The bundled pretrained reader and the CNN's NumPy forward pass (no PyTorch needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digitlab
from digitlab.bundled import PRETRAINED_FILE, pretrained, pretrained_path
from digitlab.cli import main
from digitlab.errors import SettingsError
from digitlab.io import load_model
from digitlab.models import cnn as cnn_module
from digitlab.models.cnn_numpy import NumpyCNN, state_shapes

# NumPy and PyTorch both compute in float32 but sum in other orders (and the NumPy pass
# folds batch norm into the convolutions): logits agree to a few 1e-6 on MNIST (measured
# 2e-6), probabilities to 1e-6. The bound leaves a margin and is still far below any
# difference a wrong layer, order or fold would make (those move logits by 0.1 or more).
LOGIT_TOL = 1e-4
PROBA_TOL = 1e-5


@pytest.fixture(scope="module")
def sample_test() -> tuple[np.ndarray, np.ndarray]:
    data = digitlab.load("mnist-sample")
    return data.features("test"), data.test_labels


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """CNN files load as on the base install: the CNN module sees no torch."""
    monkeypatch.setattr(cnn_module, "torch", None)


def test_bundled_file_is_in_the_package_with_its_provenance() -> None:
    resource = files("digitlab") / "weights" / PRETRAINED_FILE
    assert resource.is_file()  # importlib.resources finds it: the wheel ships the package folder
    assert pretrained_path() == Path(str(resource))
    assert pretrained_path().stat().st_size <= 1_000_000
    note = (files("digitlab") / "weights" / "mnist-cnn.md").read_text(encoding="utf-8")
    for needed in ("CC BY-SA 3.0", "scripts/build_pretrained.py", "sha256", "--seed 0"):
        assert needed in note


def test_pretrained_is_an_estimator_that_reads_mnist(sample_test) -> None:
    X, y = sample_test
    model = digitlab.pretrained()
    assert model.kind == "cnn"
    assert model.classes_.tolist() == list(range(10))
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # The sample's digits come from MNIST (not necessarily its test split): a sanity
    # check of the bundled weights, not the accuracy the README states (that is MNIST test).
    assert model.score(X, y) >= 0.98


def test_numpy_forward_pass_equals_torch(sample_test) -> None:
    pytest.importorskip("torch")
    X, _ = sample_test
    model = pretrained()  # with torch installed: the PyTorch network
    assert getattr(model, "numpy_net_", None) is None
    net = NumpyCNN(model.state_dict(), 28)
    logits = net.logits(X)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, model.decision_function(X), atol=LOGIT_TOL, rtol=0)
    np.testing.assert_array_equal(logits.argmax(axis=1), model.predict(X))


def test_negative_batch_norm_scales_are_folded_exactly(sample_test) -> None:
    """Max-pooling commutes with a positive scale only: flip some BN scales' signs
    (the net pools before its BN) and the NumPy pass must still match torch's."""
    torch_cnn = pytest.importorskip("digitlab.models.cnn")
    pytest.importorskip("torch")
    X, _ = sample_test
    state = pretrained().state_dict()
    for bn in ("net.2.weight", "net.6.weight"):
        state[bn] = state[bn] * np.where(np.arange(len(state[bn])) % 2, -1.0, 1.0).astype(np.float32)
    flipped = torch_cnn.CNN(**pretrained().get_params()).load_state_dict(state)
    logits = NumpyCNN(state, 28).logits(X[:200])
    reference = flipped.decision_function(X[:200])
    np.testing.assert_allclose(logits, reference, atol=LOGIT_TOL, rtol=0)
    # and the flip matters: the same pass without the sign rule would differ
    assert np.abs(reference - pretrained().decision_function(X[:200])).max() > 0.1


@pytest.mark.parametrize(("side", "width", "dense", "convs"),
                         [(28, 16, 128, 1), (20, 4, 8, 1), (8, 2, 5, 1), (3, 2, 4, 1), (28, 4, 8, 2),
                          (3, 2, 4, 3)])
def test_state_shapes_are_the_torch_networks(monkeypatch, side, width, dense, convs) -> None:
    pytest.importorskip("torch")
    spec = cnn_module.CNN(width=width, dense=dense, convs=convs)._state_spec(side * side, 3)
    assert state_shapes(side, 3, width, dense, convs) == {name: s.shape for name, s in spec.items()}
    monkeypatch.setattr(cnn_module, "torch", None)  # the spec a file is checked against without torch
    assert cnn_module.CNN(width=width, dense=dense, convs=convs)._state_spec(side * side, 3) == spec


@pytest.mark.parametrize(("side", "n_features", "convs"), [(8, 64, 1), (3, 7, 1), (28, 784, 2),
                                                          (8, 64, 3)])
def test_numpy_pass_small_and_padded_images(side, n_features, convs) -> None:
    """Other image sides (pools left out, odd maps), features padded to a square, and
    deeper blocks (convs > 1: only the block's last convolution pools)."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.random((60, n_features), dtype=np.float32)
    y = np.arange(60) % 3
    with pytest.warns(digitlab.DataWarning) if side * side != n_features else nullcontext():
        model = cnn_module.CNN(epochs=1, width=2, dense=5, convs=convs, random_state=0).fit(X, y)
    logits = NumpyCNN(model.state_dict(), side).logits(X)
    np.testing.assert_allclose(logits, model.decision_function(X), atol=LOGIT_TOL, rtol=0)


def test_cnn_file_loads_and_predicts_without_torch(without_torch, sample_test) -> None:
    X, y = sample_test
    model, _ = load_model(pretrained_path())
    assert model.numpy_net_ is not None
    assert not hasattr(model, "network_")
    assert model.score(X, y) >= 0.98
    assert model.decision_function(X[:3]).shape == (3, 10)
    # the state it holds is the file's, so it saves and reloads as it was read
    assert set(model.state_dict()) == {*state_shapes(28, 10, 16, 128), "classes_", "n_features_in_"}
    with pytest.raises(SettingsError, match="needs PyTorch"):
        type(model)(epochs=1).fit(X[:20], y[:20])
    with pytest.raises(SettingsError, match="summary needs PyTorch"):
        model.summary()
    from digitlab.explain import explain, method_for

    assert method_for(model) == "occlusion"
    maps = explain(model, X[:2])
    assert maps.shape == (2, 28, 28)
    assert np.abs(maps).max() > 0


def test_numpy_and_torch_paths_give_the_same_answers(monkeypatch, sample_test) -> None:
    pytest.importorskip("torch")
    X, _ = sample_test
    with_torch = pretrained()
    monkeypatch.setattr(cnn_module, "torch", None)
    without = pretrained()
    monkeypatch.undo()
    np.testing.assert_allclose(without.predict_proba(X), with_torch.predict_proba(X),
                               atol=PROBA_TOL, rtol=0)
    np.testing.assert_array_equal(without.predict(X), with_torch.predict(X))
    # test-time augmentation: the same shifted copies on both paths
    with_torch.tta = without.tta = True
    np.testing.assert_allclose(without.predict_proba(X[:100]), with_torch.predict_proba(X[:100]),
                               atol=PROBA_TOL, rtol=0)


def _photo(tmp_path: Path, image: np.ndarray, name: str = "digit.png") -> Path:
    """A sample digit as a photo-like picture: dark ink on light paper, larger."""
    picture = Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BILINEAR)
    path = tmp_path / name
    picture.save(path)
    return path


def test_predict_without_a_model_uses_the_bundled_reader(tmp_path, capsys) -> None:
    data = digitlab.load("mnist-sample")
    first = _photo(tmp_path, data.test_images[0], "a.png")
    second = _photo(tmp_path, data.test_images[1], "b.png")
    assert main(["predict", str(first), str(second), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["label"] for a in answers] == data.test_labels[:2].tolist()
    # a folder first is pictures too; a model file first is still the model
    assert main(["predict", str(tmp_path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["predict", str(pretrained_path()), str(first), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == int(data.test_labels[0])


def test_predict_a_model_without_images_is_one_line(capsys) -> None:
    assert main(["predict", str(pretrained_path())]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "no images to read" in captured.err


def test_serve_without_a_model_serves_the_bundled_reader(without_torch) -> None:
    from digitlab.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.model is None  # _cmd_serve then serves pretrained_path()
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    data = digitlab.load("mnist-sample")
    with TestClient(create_app(pretrained_path())) as client:  # loaded without torch
        about = client.get("/model").json()
        answer = client.post("/predict", json={"pixels": data.test_images[3].tolist()})
    assert "cnn" in json.dumps(about)
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == int(data.test_labels[3])


# Runs `digitlab predict` as on an install without torch: the path finder no longer finds
# it, so find_spec("torch") is None and `import torch` raises ModuleNotFoundError, as when
# it is not installed. (None in sys.modules would not do: SciPy reads sys.modules["torch"].)
_NO_TORCH = """
import importlib.machinery
import sys

find = importlib.machinery.PathFinder.find_spec

def without_torch(cls, name, path=None, target=None):
    return None if name.partition(".")[0] == "torch" else find(name, path, target)

importlib.machinery.PathFinder.find_spec = classmethod(without_torch)
from digitlab.cli import main
code = main(sys.argv[1:])
print("TORCH-IMPORTED" if "torch" in sys.modules else "NO-TORCH", code)
"""


def test_predict_works_without_torch_installed(tmp_path) -> None:
    data = digitlab.load("mnist-sample")
    photo = _photo(tmp_path, data.test_images[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(digitlab.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, "predict", str(photo), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    answer, status = done.stdout.rsplit("]", 1)
    assert status.split() == ["NO-TORCH", "0"]
    assert json.loads(answer + "]")[0]["label"] == int(data.test_labels[2])
