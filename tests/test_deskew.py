"""Deskewing: slanted strokes stand upright, ink is centred, and a deskewed model stays deskewed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from digitlab.calibration import calibration_of, scale, temperature_of
from digitlab.cli import main
from digitlab.data import deskew
from digitlab.data.deskew import deskew_images, slants
from digitlab.io import load_model
from digitlab.models import Perceptron, Softmax


def _slanted_bar(lean: float, *, side: int = 28, centre: tuple[float, float] = (14.0, 14.0)) -> np.ndarray:
    """A 2-pixel-wide stroke from row 4 to row 23 leaning ``lean`` columns per row to the right."""
    image = np.zeros((side, side), np.uint8)
    for row in range(4, 24):
        col = round(centre[1] + lean * (centre[0] - row))
        image[row, col:col + 2] = 255
    return image


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    ink = image.astype(np.float64)
    rows, cols = np.indices(image.shape)
    return float((rows * ink).sum() / ink.sum()), float((cols * ink).sum() / ink.sum())


@pytest.mark.parametrize("lean", [0.5, 0.25, -0.3])
def test_slant_is_measured_with_its_sign(lean) -> None:
    measured = slants(_slanted_bar(lean)[None])[0]
    assert measured == pytest.approx(lean, abs=0.03)


def test_a_slanted_stroke_stands_upright() -> None:
    images = np.stack([_slanted_bar(0.5), _slanted_bar(-0.3)])
    upright = deskew_images(images)
    assert upright.dtype == np.uint8
    assert upright.shape == images.shape
    np.testing.assert_allclose(slants(upright), 0.0, atol=0.02)
    for before, after in zip(images, upright, strict=True):
        # the stroke now covers a few columns instead of a diagonal band
        inked_columns = np.flatnonzero(after.max(axis=0) > 64)
        assert len(inked_columns) <= 4 < len(np.flatnonzero(before.max(axis=0)))
        # and keeps about its ink
        assert after.sum() == pytest.approx(before.sum(), rel=0.05)


def test_ink_is_centred_to_a_fraction_of_a_pixel() -> None:
    off_centre = _slanted_bar(0.0, centre=(12.0, 9.0))
    centred = deskew_images(off_centre[None])[0]
    row, col = _centre_of_mass(centred)
    assert row == pytest.approx(14.0, abs=0.3)
    assert col == pytest.approx(14.0, abs=0.3)
    assert _centre_of_mass(off_centre)[1] < 11  # it did move


def test_blank_and_flat_images_are_left_alone() -> None:
    blank = np.zeros((1, 28, 28), np.uint8)
    np.testing.assert_array_equal(deskew_images(blank), blank)
    flat = np.zeros((1, 28, 28), np.uint8)
    flat[0, 14, 4:25] = 255  # all ink in one row (no slant to measure), centred at (14, 14)
    assert slants(flat)[0] == 0.0
    np.testing.assert_array_equal(deskew_images(flat), flat)


def test_other_sizes_and_empty_batches() -> None:
    small = deskew_images(np.stack([_slanted_bar(0.4)[::2, ::2]]))  # 14x14
    assert small.shape == (1, 14, 14)
    assert deskew_images(np.zeros((0, 8, 8), np.uint8)).shape == (0, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        deskew_images(np.zeros((28, 28), np.uint8))


def test_chunks_give_the_same_images(sample, monkeypatch) -> None:
    images = sample.train_images[:50]
    whole = deskew_images(images)
    monkeypatch.setattr(deskew, "CHUNK", 16)
    np.testing.assert_array_equal(deskew_images(images), whole)


def test_deskewing_lifts_linear_models_on_is_2(sample) -> None:
    """The classic fix: on raw pixels a linear "is it a 2" stops near 97.7%."""
    raw = sample.for_task("is-2")
    upright = raw.map_images(deskew_images, "deskewed")
    for model in (Softmax(random_state=0), Perceptron(random_state=0)):
        before = model.fit(raw.features("train"), raw.train_labels).score(
            raw.features("test"), raw.test_labels)
        after = model.fit(upright.features("train"), upright.train_labels).score(
            upright.features("test"), upright.test_labels)
        assert after >= 0.98, type(model).__name__
        assert after > before, type(model).__name__


def test_a_deskewed_model_deskews_in_evaluate_and_predict(sample, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist-sample", "--task", "is-2", "--model", "softmax",
                 "--deskew", "--quiet", "--out", str(out)]) == 0
    trained = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    model, info = load_model(out / "model.safetensors")
    assert info.preprocessing["deskew"] is True
    assert json.loads((out / "config.json").read_text())["deskew"] is True

    # evaluate loads the data the way the model was trained: same accuracy
    assert main(["evaluate", str(out / "model.safetensors"), "--data", "mnist-sample", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["evaluation"]["test"]["accuracy"] == pytest.approx(trained)

    # predict --raw deskews a dataset-form picture before the model sees it
    leaning = sample.test_images[np.argmax(np.abs(slants(sample.test_images[:200])))]
    path = tmp_path / "digit.png"
    Image.fromarray(leaning).save(path)
    assert main(["predict", str(out / "model.safetensors"), str(path), "--raw", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    temperature = temperature_of(calibration_of(info))  # predict serves calibrated probabilities
    expected = scale(model.predict_proba(deskew_images(leaning[None]).reshape(1, -1) / np.float32(255)),
                     temperature)[0]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-6)
    undeskewed = scale(model.predict_proba(leaning.reshape(1, -1) / np.float32(255)), temperature)[0]
    assert not np.allclose(answer["probabilities"], undeskewed, rtol=1e-3)
