"""Calibration: probabilities that mean what they say.

A model is *calibrated* when, of the images it reads with confidence 0.8
(its largest probability), 80% are read right. Trained networks rarely are:
label smoothing leaves the CNN under-confident, a softmax layer fitted to
convergence is over-confident. Both matter once a threshold decides between
a digit and "I don't know" (``--min-confidence``).

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") fixes most of it with one number ``T`` fitted on the validation
split: the log-probabilities are divided by ``T`` and renormalised, which
sharpens the distribution when ``T < 1`` and flattens it when ``T > 1``. It
never changes which class is largest, so accuracy stays exactly the same.
It works on ``predict_proba`` alone, so every model kind gets it.

The expected calibration error (ECE) measures what is left: confidences
are put into 15 equal-width bins, and the gap between each bin's accuracy
and its mean confidence is averaged, weighted by the bin's share of images.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from digitlab.metrics import class_positions

if TYPE_CHECKING:
    from digitlab.io import ModelInfo

N_BINS = 15
# Temperatures searched: well beyond any trained model's (fits land near 0.5 to 3), and
# bounded, so a validation split the model reads perfectly cannot push T towards 0.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
EPS = 1e-12  # keeps log(0) out: some models give exact zeros


class ProbabilisticModel(Protocol):
    classes_: np.ndarray

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Calibration:
    """A temperature fitted on ``n`` validation images, and the ECE there before and after."""

    temperature: float
    ece_before: float
    ece_after: float
    n: int

    def to_metadata(self) -> dict[str, Any]:
        """The model file's ``calibration`` entry (JSON values)."""
        return {"temperature": self.temperature, "ece_before": self.ece_before,
                "ece_after": self.ece_after, "n": self.n, "bins": N_BINS, "split": "validation"}

    @classmethod
    def from_metadata(cls, entry: dict[str, Any]) -> Calibration:
        """The inverse of :meth:`to_metadata`, for an entry :func:`metadata_problem` passed."""
        return cls(float(entry["temperature"]), float(entry["ece_before"]),
                   float(entry["ece_after"]), int(entry["n"]))


def metadata_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with a model file's ``calibration`` entry, in a few words; None if nothing.

    An empty entry is a model without calibration (temperature 1).
    """
    if not entry:
        return None
    expected = {"temperature", "ece_before", "ece_after", "n", "bins", "split"}
    if set(entry) != expected:
        return f"calibration must hold exactly {sorted(expected)}, got {_shown(sorted(entry))}"
    temperature = entry["temperature"]
    if not _is_number(temperature) or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        return (f"calibration temperature must be a number from {MIN_TEMPERATURE} to "
                f"{MAX_TEMPERATURE}, got {_shown(temperature)}")
    for name in ("ece_before", "ece_after"):
        if not _is_number(entry[name]) or not 0 <= entry[name] <= 1:
            return f"calibration {name} must be a number from 0 to 1, got {_shown(entry[name])}"
    for name in ("n", "bins"):
        value = entry[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"calibration {name} must be a whole number >= 1, got {_shown(value)}"
    if entry["split"] != "validation":
        return f"calibration split must be 'validation', got {_shown(entry['split'])}"
    return None


def _shown(value: object) -> str:
    """A metadata value (JSON) for a one-line message: escaped, and cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: object) -> bool:
    """A finite int or float (JSON true is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def calibration_of(info: ModelInfo) -> Calibration | None:
    """The calibration stored in a model file, if any."""
    return Calibration.from_metadata(info.calibration) if info.calibration else None


def temperature_of(calibration: Calibration | None) -> float:
    return 1.0 if calibration is None else calibration.temperature


# ---------------------------------------------------------------- scaling


def scale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at ``temperature``: ``softmax(log(proba) / T)``, row by row.

    This is the one place digitlab applies a model's temperature; with
    ``T = 1`` the probabilities are returned unchanged (not recomputed).

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
        Rows summing to 1.
    """
    if temperature == 1.0:
        return proba
    log_p = np.log(np.clip(np.asarray(proba, dtype=np.float64), EPS, 1.0))  # (n, classes)
    scaled = np.exp(log_softmax(log_p / temperature, axis=1))
    return scaled.astype(proba.dtype, copy=False)


def fit_temperature(proba: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of the true classes.

    The search runs over log T (bounded), where the loss is smooth and T stays positive.

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
    y_index : ndarray of shape (n_samples,)
        Position of each true class among the columns.
    """
    log_p = np.log(np.clip(np.asarray(proba, dtype=np.float64), EPS, 1.0))
    rows = np.arange(len(y_index))

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(log_p / math.exp(log_t), axis=1)[rows, y_index]))

    result = minimize_scalar(nll, bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
                             method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin (equal widths over 0..1): images, mean confidence, accuracy.

    Empty bins hold count 0 and NaN for the means.
    """

    edges: np.ndarray  # (n_bins + 1,)
    count: np.ndarray  # (n_bins,) int64
    confidence: np.ndarray  # (n_bins,)
    accuracy: np.ndarray  # (n_bins,)

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of |accuracy - confidence| x share."""
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(gaps * self.count[filled]) / max(int(self.count.sum()), 1))


def reliability(proba: np.ndarray, y_index: np.ndarray, n_bins: int = N_BINS) -> Reliability:
    """Bin each image by its confidence (largest probability) into ``(lo, hi]`` bins."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_index
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # (lo, hi] as Guo et al.: searchsorted "left" puts a confidence equal to an edge below it
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: NaN, skipped by ece
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return Reliability(edges, count.astype(np.int64), mean_confidence, accuracy)


def expected_calibration_error(proba: np.ndarray, y_index: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (0 for a perfectly calibrated model)."""
    return reliability(proba, y_index, n_bins).ece


def calibrate(model: ProbabilisticModel, X_val: np.ndarray, y_val: np.ndarray) -> Calibration:
    """Fit the temperature of a fitted ``model`` on a validation split.

    Parameters
    ----------
    X_val : ndarray of shape (n_samples, n_features)
    y_val : ndarray of shape (n_samples,)
        Labels; any the model never saw are left out (no probability column).
    """
    positions = class_positions(np.asarray(model.classes_), np.asarray(y_val))
    known = positions >= 0
    proba = model.predict_proba(X_val)[known]  # (n, classes)
    y_index = positions[known]
    if not len(y_index):
        raise ValueError("calibration needs validation images of classes the model knows")
    temperature = fit_temperature(proba, y_index)
    return Calibration(
        temperature=temperature,
        ece_before=expected_calibration_error(proba, y_index),
        ece_after=expected_calibration_error(scale(proba, temperature), y_index),
        n=len(y_index),
    )


def summary(proba: np.ndarray, y_index: np.ndarray, temperature: float) -> dict[str, float]:
    """ECE and mean confidence before and after ``temperature``, JSON-ready."""
    after = scale(proba, temperature)
    return {
        "temperature": float(temperature),
        "ece_before": expected_calibration_error(proba, y_index),
        "ece_after": expected_calibration_error(after, y_index),
        "mean_confidence_before": float(np.mean(np.max(proba, axis=1))),
        "mean_confidence_after": float(np.mean(np.max(after, axis=1))),
    }
