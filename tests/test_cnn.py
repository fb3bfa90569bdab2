"""The PyTorch CNN: accuracy on real digits, reproducibility, files, sizes, stopping."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse
from PIL import Image

# Skipped where PyTorch is not installed, but never in CI, which installs the torch extra.
torch = pytest.importorskip("torch") if not os.environ.get("CI") else importlib.import_module("torch")

from digitlab.cli import main  # noqa: E402
from digitlab.data.preprocess import resize_images  # noqa: E402
from digitlab.data.sources import load  # noqa: E402
from digitlab.errors import DataWarning, SettingsError  # noqa: E402
from digitlab.io import load_model, save_model  # noqa: E402
from digitlab.models import MODELS  # noqa: E402
from digitlab.models.cnn import (  # noqa: E402
    CNN,
    auto_epochs,
    build_network,
    image_side,
    warp_images,
)
from digitlab.models.training import Progress  # noqa: E402


@pytest.fixture(scope="module")
def fitted(sample) -> CNN:
    """A CNN trained briefly on the whole bundled sample."""
    return CNN(epochs=4, random_state=0).fit(sample.features("train"), sample.train_labels)


@pytest.fixture(scope="module")
def small(sample):
    data = sample.take("train", 0, 600).take("test", 0, 300)
    return data.features("train"), data.train_labels, data.features("test"), data.test_labels


def test_beats_95_percent_on_the_sample_quickly(fitted, sample) -> None:
    assert fitted.score(sample.features("test"), sample.test_labels) > 0.95
    assert fitted.n_iter_ == 4
    assert not fitted.interrupted_
    assert fitted.history_["accuracy"][-1] > fitted.history_["accuracy"][0]


def test_probabilities_and_predictions(fitted, sample) -> None:
    X_test = sample.features("test")[:50]
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (50, 10)
    assert proba.dtype == np.float64
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    predicted = fitted.predict(X_test)
    assert predicted.dtype == sample.test_labels.dtype
    np.testing.assert_array_equal(predicted, fitted.classes_[proba.argmax(axis=1)])
    # one image at a time gives the same answers as the batch (eval mode: BN uses running stats)
    np.testing.assert_array_equal([fitted.predict(X_test[i : i + 1])[0] for i in range(5)],
                                  predicted[:5])


def test_same_seed_gives_identical_weights(small) -> None:
    X, y, _, _ = small
    first = CNN(epochs=2, random_state=3).fit(X, y).state_dict()
    second = CNN(epochs=2, random_state=3).fit(X, y).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    other = CNN(epochs=2, random_state=4).fit(X, y).state_dict()
    assert not np.array_equal(first["net.0.weight"], other["net.0.weight"])


def test_fit_leaves_torch_global_generator_alone(small) -> None:
    X, y, _, _ = small
    before = torch.random.get_rng_state()
    CNN(epochs=1, random_state=0).fit(X[:100], y[:100])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_state_dict_holds_flat_arrays_with_batch_norm_statistics(fitted) -> None:
    state = fitted.state_dict()
    assert "net.0.weight" in state
    assert any(name.endswith("running_mean") for name in state)
    assert any(name.endswith("running_var") for name in state)
    for name, value in state.items():
        assert isinstance(value, np.ndarray), name
        assert value.dtype.kind in "fiu", (name, value.dtype)
    assert int(state["n_features_in_"]) == 784


def test_save_and_load_give_identical_predictions(fitted, sample, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(MODELS, "cnn", CNN)  # registered by digitlab.models when torch imports
    path = tmp_path / "cnn.safetensors"
    save_model(path, fitted, input_shape=(28, 28))
    loaded, info = load_model(path, kind="cnn")
    assert isinstance(loaded, CNN)
    assert info.settings["epochs"] == 4
    X_test = sample.features("test")
    np.testing.assert_array_equal(loaded.predict_proba(X_test), fitted.predict_proba(X_test))
    np.testing.assert_array_equal(loaded.predict(X_test[:1]), fitted.predict(X_test[:1]))


def test_state_that_does_not_fit_the_settings_is_refused(fitted) -> None:
    with pytest.raises(ValueError, match="width"):
        CNN(width=8).load_state_dict(fitted.state_dict())
    with pytest.raises(ValueError, match="dense=64"):
        CNN(dense=64).load_state_dict(fitted.state_dict())
    with pytest.raises(ValueError, match="missing"):
        CNN().load_state_dict({})


def test_summary_lists_layers_and_parameters(fitted) -> None:
    summary = fitted.summary()
    assert summary["kind"] == "cnn"
    layers = summary["layers"]
    assert isinstance(layers, list)
    assert layers[-1]["output_shape"] == [10]
    n_params = sum(p.numel() for p in fitted.network_.parameters())
    assert summary["n_parameters"] == n_params
    assert fitted.hidden_weights() is None
    assert fitted.linear_weights() is None
    types = [layer["type"] for layer in layers]
    assert types[0].startswith("Conv2d 3x3, 1 -> ")
    assert "ReLU" in types
    assert "Flatten" in types
    assert any(t.startswith("MaxPool2d 2x2") for t in types)
    assert any(t.startswith("BatchNorm2d") for t in types)
    assert layers[0]["name"] == "conv2d_1"
    assert layers[0]["state_name"] == "net.0"
    assert "net.0" not in str(summary)
    assert "Conv2d 3x3" in str(summary)


def test_binary_task(sample) -> None:
    data = sample.for_task("is-2").take("train", 0, 1500)
    model = CNN(epochs=3, random_state=0).fit(data.features("train"), data.train_labels)
    proba = model.predict_proba(data.features("test"))
    assert proba.shape == (len(data.test_labels), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert model.score(data.features("test"), data.test_labels) > 0.95


def test_8x8_digits() -> None:
    data = load("digits")
    assert data.image_shape == (8, 8)
    model = CNN(epochs=8, random_state=0).fit(data.features("train"), data.train_labels)
    assert model.score(data.features("test"), data.test_labels) > 0.9
    # the pooling stops at 2x2
    assert _conv_output_shape(model) == [2 * model.width, 2, 2]


def test_20x20_digits(sample) -> None:
    def features(split: str) -> np.ndarray:
        images = resize_images(sample.images(split), 20)
        return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)

    model = CNN(epochs=3, random_state=0).fit(features("train"), sample.train_labels)
    assert model.n_features_in_ == 400
    assert model.score(features("test"), sample.test_labels) > 0.95


def test_ctrl_c_after_first_epoch_leaves_a_usable_model(small) -> None:
    X, y, X_test, y_test = small
    seen: list[Progress] = []

    def stop_after_first(progress: Progress) -> None:
        seen.append(progress)
        if progress.step == 1:
            raise KeyboardInterrupt

    model = CNN(epochs=5, random_state=0).fit(X, y, callback=stop_after_first)
    assert model.interrupted_
    assert not model.stopped_early_
    assert model.n_iter_ == 1
    assert len(seen) == 1
    assert seen[0].total == 5
    assert model.score(X_test, y_test) > 0.3  # one epoch on 600 digits: far above chance
    assert not model.network_.training


def test_target_accuracy_stops_early(sample, small) -> None:
    X, y, _, _ = small
    X_val, y_val = sample.features("test")[:300], sample.test_labels[:300]
    model = CNN(epochs=15, target_accuracy=0.8, random_state=0).fit(X, y, eval_set=(X_val, y_val))
    assert model.stopped_early_
    assert not model.interrupted_
    assert model.n_iter_ < 15
    assert model.history_["val_accuracy"][-1] >= 0.8
    assert model.score(X_val, y_val) >= 0.8


def test_eval_set_is_reported(small) -> None:
    X, y, X_test, y_test = small
    model = CNN(epochs=2, random_state=0).fit(X, y, eval_set=(X_test, y_test))
    assert len(model.history_["val_accuracy"]) == 2
    assert len(model.history_["val_loss"]) == 2


def test_test_time_augmentation(fitted, sample) -> None:
    X_test, y_test = sample.features("test"), sample.test_labels
    tta = CNN(**{**fitted.get_params(), "tta": True}).load_state_dict(fitted.state_dict())
    proba = tta.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert tta.score(X_test, y_test) > fitted.score(X_test, y_test) - 0.01


def test_input_shape_and_settings_are_checked(fitted) -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.zeros((2, 400), dtype=np.float32))
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"label_smoothing": 1.0}, {"device": "tpu"},
                {"target_accuracy": 1.5}, {"augment": "yes"}, {"tta": None}, {"dense": 0},
                {"epochs": 2.5}, {"rotate": -1.0}, {"rotate": 181.0}, {"zoom": 1.0},
                {"convs": 0}):
        with pytest.raises(SettingsError):
            CNN(**bad).fit(np.zeros((4, 64), dtype=np.float32), y)


def test_network_sizes() -> None:
    assert image_side(784) == 28
    assert image_side(64) == 8
    # the smallest square holding the features: 3 -> 2x2, 5 and 9 -> 3x3, 10 -> 4x4
    assert [image_side(n) for n in (1, 2, 3, 4, 5, 9, 10, 783)] == [1, 2, 2, 2, 3, 3, 4, 28]
    with pytest.raises(ValueError, match="at least 1"):
        image_side(0)
    for side in (1, 2, 3):  # too small to pool: the maps keep the image's size
        network = build_network(side, 3, 2, 4)
        assert not any(isinstance(layer, torch.nn.MaxPool2d) for layer in network)
        assert network[:-4](torch.zeros(2, 1, side, side)).shape[1:] == (4, side, side)
        assert network(torch.zeros(2, 1, side, side)).shape == (2, 3)
    for side, final in ((28, 7), (20, 5), (8, 2)):
        network = build_network(side, 10, 4, 16)
        out = network[:-4](torch.zeros(2, 1, side, side))  # up to the flatten
        assert out.shape[1:] == (8, final, final), side
        assert network(torch.zeros(2, 1, side, side)).shape == (2, 10)


def _conv_output_shape(model: CNN) -> list[int]:
    """Output shape of the convolutional part: the layer before the flatten."""
    layers = model.summary()["layers"]
    flatten = next(i for i, layer in enumerate(layers) if layer["layer"].startswith("Flatten"))
    return layers[flatten - 1]["output_shape"]


@pytest.mark.parametrize(("n_samples", "epochs"), [(4000, 16), (60000, 3), (20000, 3), (1000, 30)])
def test_automatic_epochs_follow_the_training_set_size(n_samples, epochs) -> None:
    assert auto_epochs(n_samples) == epochs


def test_automatic_settings_augment_only_long_runs(small) -> None:
    X, y, _, _ = small

    def first_epoch_accuracy(**settings) -> float:
        return CNN(random_state=0, **settings).fit(X, y, callback=_stop_after_one_epoch).history_["accuracy"][0]

    # 600 images: epochs=None runs 30 epochs, so it augments; the first epoch of
    # a fit with augment=None is then the same as one with augment=True.
    auto = CNN(random_state=0).fit(X[::15], y[::15])  # 40 images, 1 step per epoch
    assert auto.n_iter_ == 30
    assert first_epoch_accuracy() == first_epoch_accuracy(augment=True)
    assert first_epoch_accuracy(epochs=3) == first_epoch_accuracy(epochs=3, augment=False)
    assert first_epoch_accuracy(epochs=3) != first_epoch_accuracy(epochs=3, augment=True)


def test_warp_images_turns_scales_and_shifts_each_image(sample) -> None:
    images = torch.from_numpy(sample.features("train")[:64]).reshape(-1, 1, 28, 28)

    def warped(seed: int, **settings) -> torch.Tensor:
        options = {"max_shift": 2, "rotate": 15.0, "zoom": 0.1, **settings}
        return warp_images(images, generator=torch.Generator().manual_seed(seed), **options)

    # Nothing to draw: the identity, up to bilinear rounding at the pixel centres.
    torch.testing.assert_close(warped(0, max_shift=0, rotate=0.0, zoom=0.0), images,
                               atol=1e-5, rtol=0)
    first = warped(0)
    assert first.shape == images.shape
    torch.testing.assert_close(warped(0), first, atol=0, rtol=0)  # same seed, same images
    assert not torch.equal(warped(1), first)
    changed = (first - images).abs().flatten(1).amax(1)
    assert (changed > 0.1).all()  # every image moved
    # Turning and shifting by a few pixels keeps the digit in the frame: the ink stays.
    ink_before, ink_after = images.sum((1, 2, 3)), first.sum((1, 2, 3))
    assert ((ink_after / ink_before - 1).abs() < 0.3).all()
    # Zoom alone scales the ink by about the square of the factor: never above (1.1)^2.
    zoomed = warped(2, max_shift=0, rotate=0.0, zoom=0.1).sum((1, 2, 3)) / ink_before
    assert ((zoomed > 0.75) & (zoomed < 1.3)).all()
    assert zoomed.std() > 0.02


def test_rotate_and_zoom_change_training_reproducibly(small) -> None:
    X, y, _, _ = small

    def first_epoch(**settings) -> list[float]:
        model = CNN(epochs=3, augment=True, random_state=0, **settings)
        return model.fit(X, y, callback=_stop_after_one_epoch).history_["loss"]

    assert first_epoch(rotate=10.0) == first_epoch(rotate=10.0)
    assert first_epoch(rotate=10.0) != first_epoch()
    assert first_epoch(zoom=0.1) != first_epoch(rotate=10.0)
    # Without augmenting, rotate and zoom do nothing.
    plain = CNN(epochs=1, augment=False, random_state=0).fit(X, y).history_["loss"]
    assert CNN(epochs=1, augment=False, rotate=10.0, random_state=0).fit(X, y).history_["loss"] == plain


def _stop_after_one_epoch(progress: Progress) -> None:
    raise KeyboardInterrupt


def test_cli_trains_evaluates_and_predicts_with_a_cnn(tmp_path, capsys, sample) -> None:
    out = tmp_path / "run"
    code = main(["train", "--data", "mnist-sample", "--model", "cnn", "--epochs", "4",
                 "--augment", "false", "--dense", "32", "--seed", "1", "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.9
    config = json.loads((out / "config.json").read_text())
    assert config["model_settings"]["epochs"] == 4
    assert config["model_settings"]["augment"] is False
    assert config["model_settings"]["dense"] == 32
    model, info = load_model(out / "model.safetensors")
    assert isinstance(model, CNN)
    assert info.kind == "cnn"
    assert model.augment is False

    capsys.readouterr()
    assert main(["evaluate", str(out / "model.safetensors"), "--data", "mnist-sample", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["evaluation"]["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])

    digit = tmp_path / "digit.png"
    Image.fromarray(sample.images("test")[0]).save(digit)
    assert main(["predict", str(out / "model.safetensors"), str(digit), "--raw", "--json"]) == 0
    [prediction] = json.loads(capsys.readouterr().out)
    assert len(prediction["probabilities"]) == 10
    assert prediction["label"] == int(sample.test_labels[0])


def test_bad_cnn_setting_from_the_cli_is_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--data", "digits", "--model", "cnn", "--device", "tpu",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "device must be one of" in err
    assert "\n" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_command_line_starts_without_importing_torch() -> None:
    # Listing the CNN's settings must not cost torch's import time for every command.
    code = ("import sys, digitlab.cli, digitlab.models as m; "
            "print('cnn' in m.MODELS, 'torch' in sys.modules)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
    assert printed == ["True", "False"]  # not even a lazy stand-in: libraries look there


def _blobs(n_features: int, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of pixel-like features in [0, 1], each class brighter in its own place."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    X = rng.random((n, n_features)).astype(np.float32) * 0.3
    X[np.arange(n), y % n_features] += 0.7
    return X, y


def test_features_that_are_not_a_square_image_are_padded_with_zeros(tmp_path) -> None:
    X, y = _blobs(3)
    with pytest.warns(DataWarning) as caught:
        model = CNN(epochs=10, width=2, dense=8, batch_size=16, lr=0.05, random_state=0).fit(X, y)
    assert [str(w.message) for w in caught] == [
        "X has 3 features, not a square image: laid out in a 2x2 image padded with zeros"]
    assert model.n_features_in_ == 3
    assert model.score(X, y) > 0.9
    proba = model.predict_proba(X)
    assert proba.shape == (90, 3)
    # The very network a 2x2 image with a zero last pixel trains (augment=None: off for
    # padded features, so given here for the square one).
    square = np.hstack([X, np.zeros((90, 1), np.float32)])
    same = CNN(epochs=10, width=2, dense=8, batch_size=16, lr=0.05, augment=False,
               random_state=0).fit(square, y)
    for name, value in same.state_dict().items():
        if name != "n_features_in_":
            np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)
    np.testing.assert_array_equal(model.predict_proba(X), same.predict_proba(square))
    with pytest.raises(ValueError, match="expecting 3 features"):
        model.predict(square)

    summary = model.summary()
    assert summary["layers"][-5]["output_shape"] == [4, 2, 2]  # before the flatten
    path = tmp_path / "padded.safetensors"
    save_model(path, model, input_shape=(1, 3))
    loaded, info = load_model(path)
    assert info.input_shape == [1, 3]
    np.testing.assert_array_equal(loaded.predict_proba(X), proba)
    assert CNN(width=2, dense=8).load_state_dict(model.state_dict()).n_features_in_ == 3


def test_one_feature_trains_even_with_a_lone_last_image() -> None:
    # 1x1 maps: batch norm cannot normalise a batch of one, so the 17th image joins the
    # 16 before it instead of forming a batch of its own.
    X = np.random.default_rng(0).random((17, 1)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    model = CNN(epochs=2, width=2, dense=4, batch_size=16, random_state=0).fit(X, y)  # 1x1: square
    assert model.predict(X).shape == (17,)


def test_input_is_checked_before_the_shape_and_leaves_a_fitted_model_unchanged(small) -> None:
    X, y, _, _ = small
    model = CNN(epochs=1, width=2, dense=4, random_state=0).fit(X[:64], y[:64])
    before = model.state_dict()
    # 10 features, not a square image: the input checks come before anything about shape.
    nan = X[:64, :10].copy()
    nan[3, 5] = np.nan
    cases = [  # scikit-learn's own words, which its estimator checks look for
        (scipy.sparse.csr_matrix(X[:64, :10]), TypeError, "Sparse data was passed"),
        (nan, ValueError, "Input X contains NaN"),
        (X[:64, :10] + 1j, ValueError, "Complex data not supported"),
        (np.zeros((0, 10), np.float32), ValueError, "0 sample"),
        (X[:1, :10], ValueError, "1 class"),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            model.fit(bad, y[: bad.shape[0]])
    with pytest.raises(ValueError, match="Unknown label type"):
        model.fit(X[:64, :10], np.linspace(0, 1, 64))
    with pytest.raises(ValueError, match="1 class"):
        model.fit(X[:64, :10], np.zeros(64, np.int64))
    with pytest.raises(SettingsError):  # a setting before anything about X
        model.set_params(width=0).fit(np.zeros((4, 3)), [0, 1, 0, 1])
    model.set_params(width=2)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)



def test_first_filters_and_first_block_are_the_network_s_own(fitted, sample) -> None:
    filters = fitted.first_filters()
    assert filters.shape == (16, 3, 3)
    np.testing.assert_array_equal(filters, fitted.network_[0].weight.detach().numpy()[:, 0])
    X = sample.features("test")[:20]
    maps = fitted.first_block(X)
    assert maps.shape == (20, 16, 14, 14)
    assert maps.dtype == np.float32
    assert maps.min() == 0.0 < maps.max()  # after the ReLU: some cut off, some lit
    # the rest of the network, fed the block's output, gives the model's own scores
    layers = list(fitted.network_)
    end = next(i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.ReLU)) + 1
    with torch.inference_mode():
        logits = torch.nn.Sequential(*layers[end:])(torch.from_numpy(maps)).double().numpy()
    np.testing.assert_allclose(logits, fitted.decision_function(X), rtol=1e-4, atol=1e-4)


def test_bfloat16_training_is_seeded_and_learns(small, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(MODELS, "cnn", CNN)  # registered by digitlab.models when torch imports
    X, y, X_test, y_test = small
    first = CNN(epochs=3, batch_size=32, precision="bfloat16", random_state=3).fit(X, y)
    again = CNN(epochs=3, batch_size=32, precision="bfloat16", random_state=3).fit(X, y).state_dict()
    for name, value in first.state_dict().items():
        np.testing.assert_array_equal(value, again[name], err_msg=name)
    # Autocast really ran: the same seed in float32 ends with other weights.
    plain = CNN(epochs=3, batch_size=32, random_state=3).fit(X, y)
    assert not np.array_equal(first.state_dict()["net.0.weight"], plain.state_dict()["net.0.weight"])
    # Weights stay float32, predictions too, and it learns as float32 does (600 images).
    assert first.state_dict()["net.0.weight"].dtype == np.float32
    assert first.predict_proba(X_test).dtype == np.float64
    assert plain.score(X_test, y_test) > 0.85
    assert first.score(X_test, y_test) > plain.score(X_test, y_test) - 0.03
    save_model(tmp_path / "bf16.safetensors", first, input_shape=(28, 28))
    loaded, info = load_model(tmp_path / "bf16.safetensors", kind="cnn")
    assert info.settings["precision"] == "bfloat16"
    np.testing.assert_array_equal(loaded.predict(X_test), first.predict(X_test))


def test_precision_is_checked() -> None:
    with pytest.raises(SettingsError, match="precision"):
        CNN(precision="float16").fit(np.zeros((4, 64), dtype=np.float32), np.array([0, 1, 0, 1]))


@pytest.fixture(scope="module")
def large_tiny():
    """18,300 random 8x8 images: epochs=None means the minimum of 3 epochs there (the short
    run's condition) at a fraction of full MNIST's cost."""
    rng = np.random.default_rng(0)
    X = rng.random((18_300, 64), dtype=np.float32)
    return X, (X[:, :32].sum(1) > X[:, 32:].sum(1)).astype(np.int64)


def _quick(**settings) -> CNN:
    return CNN(batch_size=1024, width=2, dense=8, random_state=0, **settings)


def test_short_run_is_four_bfloat16_epochs_the_last_unshifted(large_tiny, monkeypatch) -> None:
    import digitlab.models.cnn as cnn_module

    X, y = large_tiny
    assert auto_epochs(len(X)) == 3
    monkeypatch.setattr(cnn_module, "native_bfloat16", lambda device: True)
    short = _quick().fit(X, y)
    assert short.n_iter_ == 4
    assert short.training_precision_ == "bfloat16"
    assert short.summary()["training_precision"] == "bfloat16"
    assert "Trained in bfloat16" in str(short.summary())
    again = _quick().fit(X, y).state_dict()
    for name, value in short.state_dict().items():  # seeded: the same weights
        np.testing.assert_array_equal(value, again[name], err_msg=name)
    # The same first three epochs as shifting all four in bfloat16; the last one differs.
    shifted = _quick(epochs=4, precision="bfloat16", augment=True).fit(X, y)
    assert short.history_["loss"][:3] == shifted.history_["loss"][:3]
    assert short.history_["loss"][3] != shifted.history_["loss"][3]
    # augment=False keeps its word: four plain bfloat16 epochs.
    plain = _quick(augment=False).fit(X, y).state_dict()
    same = _quick(epochs=4, precision="bfloat16", augment=False).fit(X, y).state_dict()
    np.testing.assert_array_equal(plain["net.0.weight"], same["net.0.weight"])


@pytest.mark.parametrize("settings", [{"precision": "float32"}, {"epochs": 3}])
def test_short_run_only_with_auto_precision_and_epochs(large_tiny, monkeypatch, settings) -> None:
    import digitlab.models.cnn as cnn_module

    X, y = large_tiny
    monkeypatch.setattr(cnn_module, "native_bfloat16", lambda device: True)
    model = _quick(**settings).fit(X, y)
    assert model.n_iter_ == 3
    reference = _quick(epochs=3, precision="float32").fit(X, y)
    np.testing.assert_array_equal(model.state_dict()["net.0.weight"],
                                  reference.state_dict()["net.0.weight"])


def test_no_short_run_without_native_bfloat16_or_on_small_sets(large_tiny, small, monkeypatch) -> None:
    import digitlab.models.cnn as cnn_module

    X, y = large_tiny
    monkeypatch.setattr(cnn_module, "native_bfloat16", lambda device: False)
    model = _quick().fit(X, y)
    assert model.n_iter_ == 3
    assert model.training_precision_ == "float32"
    reference = _quick(precision="float32").fit(X, y)
    np.testing.assert_array_equal(model.state_dict()["net.0.weight"],
                                  reference.state_dict()["net.0.weight"])
    # 600 images: epochs=None means 30 epochs, not the minimum; "auto" is float32 there.
    monkeypatch.setattr(cnn_module, "native_bfloat16", lambda device: True)
    auto = _quick().fit(small[0], small[1])
    assert auto.n_iter_ == 30
    plain = _quick(precision="float32").fit(small[0], small[1]).state_dict()
    np.testing.assert_array_equal(auto.state_dict()["net.0.weight"], plain["net.0.weight"])


def test_native_bfloat16_is_a_bool_and_false_off_the_cpu() -> None:
    from digitlab.models.cnn import native_bfloat16

    assert isinstance(native_bfloat16(torch.device("cpu")), bool)
    assert native_bfloat16(torch.device("meta")) is False
