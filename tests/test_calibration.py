"""Temperature scaling, the expected calibration error, and where the temperature is served."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from digitlab import plots
from digitlab.calibration import (
    MAX_TEMPERATURE,
    N_BINS,
    Calibration,
    calibrate,
    calibration_of,
    expected_calibration_error,
    fit_temperature,
    metadata_problem,
    reliability,
    scale,
)
from digitlab.cli import main
from digitlab.errors import DataError, SettingsError
from digitlab.inspection import inspect_model
from digitlab.io import load_model, save_model
from digitlab.models import Softmax
from digitlab.predict import UNKNOWN, read_images
from digitlab.report import render_html


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- scaling and fitting


def test_scale_divides_log_probabilities_and_keeps_every_argmax() -> None:
    rng = np.random.default_rng(0)
    proba = softmax_rows(rng.normal(size=(50, 10)) * 3).astype(np.float32)
    assert scale(proba, 1.0) is proba  # T = 1 serves the model's own numbers, untouched
    for temperature in (0.3, 2.5):
        scaled = scale(proba, temperature)
        # reference: p^(1/T), renormalised
        powered = proba.astype(np.float64) ** (1 / temperature)
        np.testing.assert_allclose(scaled, powered / powered.sum(axis=1, keepdims=True), rtol=1e-5)
        assert scaled.dtype == np.float32
        np.testing.assert_array_equal(scaled.argmax(axis=1), proba.argmax(axis=1))
    # T < 1 sharpens, T > 1 flattens
    assert (scale(proba, 0.3).max(axis=1) >= proba.max(axis=1) - 1e-6).all()
    assert (scale(proba, 2.5).max(axis=1) <= proba.max(axis=1) + 1e-6).all()


def test_scale_copes_with_exact_zeros() -> None:
    proba = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    scaled = scale(proba, 2.0)
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_a_known_miscalibration(true_temperature) -> None:
    # Labels drawn from softmax(z) are calibrated at z; a model that reports softmax(z / T0)
    # is off by T0, which the fit must find: log softmax(z / T0) / T = z at T = 1 / T0.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20_000, 10)) * 2
    truth = softmax_rows(logits)
    y = np.array([rng.choice(10, p=row) for row in truth])
    reported = softmax_rows(logits / true_temperature)
    assert fit_temperature(reported, y) == pytest.approx(1 / true_temperature, rel=0.05)
    assert fit_temperature(truth, y) == pytest.approx(1.0, rel=0.05)


def test_a_perfectly_read_split_cannot_push_the_temperature_past_its_bound() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8]] * 10)
    y = np.array([0, 1] * 10)
    assert fit_temperature(proba, y) >= 0.05  # NLL falls towards T = 0; the bound stops it
    assert fit_temperature(proba, 1 - y) <= MAX_TEMPERATURE


# ---------------------------------------------------------------- the calibration error


def _ece_by_loops(proba: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    """The textbook definition, written independently: bins (lo, hi], weighted gaps."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(y))
                   if (lo < proba[i].max() <= hi) or (b == 0 and proba[i].max() == 0)]
        if members:
            acc = np.mean([proba[i].argmax() == y[i] for i in members])
            conf = np.mean([proba[i].max() for i in members])
            total += abs(acc - conf) * len(members) / len(y)
    return total


def test_ece_matches_the_definition_and_a_hand_worked_case() -> None:
    # Two images at confidence 0.9, one right, one wrong: |0.5 - 0.9| = 0.4 on all images.
    proba = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(proba, np.array([0, 1])) == pytest.approx(0.4)
    assert expected_calibration_error(proba, np.array([0, 0])) == pytest.approx(0.1)
    rng = np.random.default_rng(2)
    proba = softmax_rows(rng.normal(size=(300, 10)) * 2)
    y = rng.integers(0, 10, 300)
    for n_bins in (1, 10, N_BINS):
        assert expected_calibration_error(proba, y, n_bins) == pytest.approx(
            _ece_by_loops(proba, y, n_bins), abs=1e-12)


def test_a_confidence_on_a_bin_edge_falls_in_the_bin_below() -> None:
    proba = np.array([[0.6, 0.4], [1.0, 0.0]])  # 0.6 is the edge between bins 8 and 9 of 15
    bins = reliability(proba, np.array([0, 0]), n_bins=15)
    assert bins.count[8] == 1
    assert bins.count[14] == 1
    assert bins.count.sum() == 2
    assert np.isnan(bins.accuracy[0])  # empty bins are NaN, and left out of the ECE


# ---------------------------------------------------------------- on a real model


@pytest.fixture(scope="module")
def calibrated(sample, tmp_path_factory):
    """A softmax layer fitted on 600 digits, calibrated on 300 others (stratified, carved from
    the train split as a run does), saved with its temperature; and 200 test digits."""
    X, y = sample.features("train")[:900], sample.train_labels[:900]
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=300, stratify=y, random_state=0)
    model = Softmax(random_state=0).fit(X_fit, y_fit)
    calibration = calibrate(model, X_val, y_val)
    path = tmp_path_factory.mktemp("calibrated") / "model.safetensors"
    save_model(path, model, input_shape=sample.image_shape, class_names=sample.class_names,
               calibration=calibration)
    return path, model, calibration


def test_calibrate_lowers_the_validation_error_and_keeps_accuracy(calibrated, sample) -> None:
    _path, model, calibration = calibrated
    assert calibration.n == 300
    assert calibration.temperature != pytest.approx(1.0, abs=0.05)
    assert calibration.ece_after < calibration.ece_before
    X, y = sample.features("test")[:200], sample.test_labels[:200]
    raw = model.predict_proba(X)
    scaled = scale(raw, calibration.temperature)
    np.testing.assert_array_equal(scaled.argmax(axis=1), raw.argmax(axis=1))
    # and on images the fit never saw, the error falls too
    assert expected_calibration_error(scaled, y) < expected_calibration_error(raw, y)


def test_calibrate_leaves_out_labels_the_model_never_saw(calibrated, sample) -> None:
    _path, model, _ = calibrated
    X, y = sample.features("test")[:50], sample.test_labels[:50].copy()
    y[:5] = 42
    assert calibrate(model, X, y).n == 45
    with pytest.raises(ValueError, match="classes the model knows"):
        calibrate(model, X[:3], np.full(3, 42))


def test_the_temperature_is_stored_and_served_by_read_images(calibrated, sample) -> None:
    path, model, calibration = calibrated
    loaded, info = load_model(path)
    assert calibration_of(info) == calibration
    assert info.calibration["split"] == "validation"
    images = sample.test_images[:20]
    readings = read_images(loaded, info, images)
    raw = model.predict_proba(images.reshape(20, -1).astype(np.float32) / 255)
    np.testing.assert_allclose([r.probabilities for r in readings],
                               scale(raw, calibration.temperature), rtol=1e-6)
    assert raw.max(axis=1) != pytest.approx(np.max([r.probabilities for r in readings], axis=1))


def test_min_confidence_answers_unknown_but_keeps_the_probabilities(calibrated, sample) -> None:
    path, *_ = calibrated
    model, info = load_model(path)
    images = sample.test_images[:30]
    plain = read_images(model, info, images)
    confidences = np.array([max(r.probabilities) for r in plain])
    threshold = float(np.median(confidences))
    gated = read_images(model, info, images, min_confidence=threshold)
    for before, after, confidence in zip(plain, gated, confidences, strict=True):
        assert after.probabilities == before.probabilities
        if confidence < threshold:
            assert (after.label, after.name) == (None, UNKNOWN)
        else:
            assert (after.label, after.name) == (before.label, before.name)
    assert sum(r.label is None for r in gated) == int(np.sum(confidences < threshold)) > 0
    assert all(r.label is not None for r in read_images(model, info, images, min_confidence=0))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(SettingsError, match="min_confidence must be a number from 0 to 1"):
            read_images(model, info, images, min_confidence=bad)


def test_an_uncalibrated_file_serves_the_model_unchanged(calibrated, sample, tmp_path) -> None:
    _path, model, _ = calibrated
    path = tmp_path / "plain.safetensors"
    info = save_model(path, model, input_shape=sample.image_shape)
    assert info.calibration == {}
    loaded, info = load_model(path)
    assert calibration_of(info) is None
    images = sample.test_images[:10]
    raw = model.predict_proba(images.reshape(10, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal([r.probabilities for r in read_images(loaded, info, images)], raw)


GOOD = {"temperature": 1.5, "ece_before": 0.1, "ece_after": 0.02, "n": 300, "bins": 15,
        "split": "validation"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"temperature": -1.0}, "temperature must be a number from 0.05 to 20.0, got -1.0"),
        ({"temperature": 0}, "temperature must be"),
        ({"temperature": float("nan")}, "temperature must be .* got NaN"),
        ({"temperature": "1.5"}, "temperature must be"),
        ({"temperature": True}, "temperature must be"),
        ({"temperature": 1e9}, "temperature must be"),
        ({"ece_after": 1.5}, "ece_after must be a number from 0 to 1"),
        ({"n": 0}, "n must be a whole number"),
        ({"n": 3.0}, "n must be a whole number"),
        ({"split": "test"}, "split must be 'validation', got \"test\""),
        ({"colour": "red"}, "calibration must hold exactly"),
    ],
)
def test_damaged_calibration_metadata_is_refused(change, fragment) -> None:
    assert metadata_problem(GOOD) is None
    assert metadata_problem({}) is None
    problem = metadata_problem({**GOOD, **change})
    assert problem is not None
    assert "\n" not in problem
    assert re.search(fragment, problem)


def test_load_model_refuses_a_signed_file_with_a_bad_temperature(calibrated, tmp_path) -> None:
    from test_io import _read, _sign

    path, *_ = calibrated
    info, state = _read(path)
    bad = tmp_path / "bad.safetensors"
    _sign(bad, {**info, "calibration": {**info["calibration"], "temperature": -2.0}}, state)
    with pytest.raises(DataError, match=r"bad.safetensors: calibration temperature must be"):
        load_model(bad)
    _sign(bad, {**info, "calibration": "hot"}, state)
    with pytest.raises(DataError, match="calibration is not an object"):
        load_model(bad)


# ---------------------------------------------------------------- evaluate, report, figure


def test_evaluate_reports_calibrated_log_loss_and_the_error(calibrated, sample, capsys) -> None:
    path, model, calibration = calibrated
    assert main(["evaluate", str(path), "--count", "200", "--json"]) == 0
    test = json.loads(capsys.readouterr().out)["evaluation"]["test"]
    X, y = sample.features("test")[:200], sample.test_labels[:200]
    served = scale(model.predict_proba(X), calibration.temperature)
    log_loss = -np.mean(np.log(served[np.arange(200), y]))
    assert test["costs"]["cross_entropy"] == pytest.approx(log_loss, rel=1e-5)
    figures = test["calibration"]
    assert figures["temperature"] == calibration.temperature
    assert figures["ece_after"] == pytest.approx(expected_calibration_error(served, y))
    assert figures["ece_before"] == pytest.approx(
        expected_calibration_error(model.predict_proba(X), y))
    assert main(["evaluate", str(path), "--count", "200"]) == 0
    assert f"before the temperature {calibration.temperature:.2f}" in capsys.readouterr().out


def test_report_shows_the_reliability_diagram_and_errors(calibrated, sample) -> None:
    _path, model, calibration = calibrated
    data = sample.take("train", 0, 100).take("test", 0, 100)
    inspection = inspect_model(model, data, calibration=calibration)
    assert "reliability" in inspection.figures.names()
    page = render_html(title="t", data_summary=data.summary(), model_summary=model.summary(),
                       inspection=inspection)
    assert "id='fig-reliability'" in page
    assert "<h3 id='calibration'>" in page
    assert f"{calibration.ece_before:.4f}" in page
    assert f"{calibration.ece_after:.4f}" in page
    plain = inspect_model(model, data)  # uncalibrated: the diagram still shows the model
    assert "reliability" in plain.figures.names()
    assert plain.evaluation["test"]["calibration"]["temperature"] == 1.0


def test_reliability_diagram_draws_one_line_per_curve() -> None:
    rng = np.random.default_rng(3)
    proba = softmax_rows(rng.normal(size=(200, 10)) * 3)
    y = rng.integers(0, 10, 200)
    fig = plots.reliability_diagram([("before", reliability(proba, y)),
                                     ("after", reliability(scale(proba, 3.0), y))], title="r")
    assert isinstance(fig, Figure)
    top = fig.axes[0]
    labels = [line.get_label() for line in top.get_lines()]
    assert labels[0] == "calibrated"
    assert labels[1].startswith("before (ECE ")
    assert len(labels) == 3


def test_calibration_round_trips_through_metadata() -> None:
    calibration = Calibration(0.7, 0.12, 0.02, 400)
    assert Calibration.from_metadata(calibration.to_metadata()) == calibration
    assert metadata_problem(calibration.to_metadata()) is None


# ---------------------------------------------------------------- in a training run


def test_a_run_calibrates_on_its_validation_split_only(tmp_path) -> None:
    from digitlab.run import RunConfig, train

    out = tmp_path / "run"
    result = train(RunConfig(model="softmax", validation_fraction=0.1), out)
    stored = result.metrics["calibration"]
    assert stored["n"] == len(result.dataset.labels("validation")) == 400
    _model, info = load_model(out / "model.safetensors")
    assert info.calibration == stored
    # the temperature is the one fitted on validation, not on test
    val_X, val_y = result.dataset.features("validation"), result.dataset.labels("validation")
    assert calibrate(result.model, val_X, val_y).temperature == stored["temperature"]
    assert (out / "figures" / "reliability.png").is_file()
    assert "<h3 id='calibration'>" in (out / "report.html").read_text(encoding="utf-8")
    test = result.metrics["test"]["calibration"]
    assert test["temperature"] == stored["temperature"]
    assert test["ece_after"] < test["ece_before"]
    plain = train(RunConfig(model="softmax", validation_fraction=0.0))
    assert "calibration" not in plain.metrics
    assert plain.metrics["test"]["calibration"]["temperature"] == 1.0
