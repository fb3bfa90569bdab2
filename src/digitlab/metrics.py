"""How good a model really is: accuracy beside the baselines it has to beat.

Accuracy alone misleads on unbalanced tasks: a detector of 2s that answers
"not a 2" every time is 90% accurate. So every figure here comes with the
majority-class baseline and the balanced accuracy (the mean of per-class
recalls, which is 50% for any constant answer on a binary task).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from digitlab import maths

EPS = 1e-12  # keeps log(0) out of the cross-entropies


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    return float(accuracy_score(y_true, y_pred))


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a share ``correct / total``: where the true accuracy
    lies with ``confidence``, given ``total`` test images.

    On 200 test images one image is half a percentage point, and 197 right (98.5%)
    has the interval 95.7% to 99.5%: two models 0.5 points apart are not told apart.
    Wilson's interval, unlike the normal approximation, stays inside [0, 1] and holds
    at 0 or ``total`` right. ``(nan, nan)`` when there are no images.
    """
    if total <= 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest  # scipy comes with scikit-learn; imported on use (slow)

    interval = binomtest(int(correct), int(total)).proportion_ci(confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def accuracy_interval(y_true: np.ndarray, y_pred: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson interval (:func:`wilson_interval`) of the accuracy of ``y_pred``."""
    y_true = np.asarray(y_true)
    return wilson_interval(int(np.sum(y_true == np.asarray(y_pred))), len(y_true), confidence)


def format_interval(interval: tuple[float, float] | list[float] | None) -> str:
    """``"95.7-99.5%"``: an accuracy's interval as text for tables; "" when unknown."""
    if not interval or any(v != v for v in interval):  # v != v: NaN
        return ""
    low, high = interval
    return f"{100 * low:.1f}-{100 * high:.1f}%"


def format_cost(value: float | None) -> str:
    """A cost or loss to three significant figures ("0.908", "8.99", "0.0123"); "" if unknown."""
    return "" if value is None or value != value else f"{value:.3g}"


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    return float(balanced_accuracy_score(y_true, y_pred))


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``y_test`` of always answering the most frequent training label.

    Ties go to the smallest label, as ``np.argmax`` on the counts does.
    """
    values, counts = np.unique(y_train, return_counts=True)
    majority = values[np.argmax(counts)]
    return float(np.mean(np.asarray(y_test) == majority))


def per_class(
    y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray | list[int]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each label, keyed by the label as text.

    A label never predicted has precision 0 (scikit-learn's ``zero_division=0``).
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        str(int(label)): {
            "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }  # fmt: skip


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray | list[int]) -> np.ndarray:
    """Counts ``C[i, j]`` of true label ``labels[i]`` predicted as ``labels[j]``, int64."""
    return confusion_matrix(y_true, y_pred, labels=labels).astype(np.int64)


def squared_distance_cost(outputs: np.ndarray, y_index: np.ndarray) -> float:
    """Mean over samples of ||output - one_hot(y)||^2: the classic "total cost" of an MLP.

    ``outputs`` has shape (n, n_classes): the network's output activations
    (or probabilities); ``y_index`` the position of each true class.
    """
    return maths.squared_distance_cost(outputs, y_index)  # written down once, for learners


def cross_entropy(proba: np.ndarray, y_index: np.ndarray) -> float:
    """Mean of -log p(true class); ``proba`` of shape (n, n_classes)."""
    proba = np.asarray(proba, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y_index)), y_index], EPS, 1.0))))


def binary_cross_entropy(p_positive: np.ndarray, y01: np.ndarray) -> float:
    """Mean of -[y log p + (1 - y) log(1 - p)] for a positive-class probability ``p``."""
    p = np.clip(np.asarray(p_positive, dtype=np.float64), EPS, 1.0 - EPS)
    y = np.asarray(y01, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def class_positions(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Position of each label of ``y`` in the sorted ``classes``; -1 for unknown labels."""
    positions = np.searchsorted(classes, y)
    positions = np.clip(positions, 0, len(classes) - 1)
    return np.where(classes[positions] == y, positions, -1)


def evaluate_predictions(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray,
    classes: np.ndarray,
    *,
    y_train: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every figure of one split, JSON-ready.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n_samples,)
    proba : ndarray of shape (n_samples, n_classes)
        Predicted probabilities, columns in the order of ``classes``.
    classes : ndarray of shape (n_classes,)
        The model's classes (sorted labels).
    y_train : ndarray, optional
        Training labels; gives the majority-class baseline.
    """
    labels = np.union1d(classes, y_true)
    result: dict[str, Any] = {
        "count": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "accuracy_ci": list(accuracy_interval(y_true, y_pred)),  # 95% Wilson interval
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
    }
    if y_train is not None:
        result["majority_baseline"] = majority_baseline(y_train, y_true)
    result["per_class"] = per_class(y_true, y_pred, labels)
    result["confusion"] = {
        "labels": [int(label) for label in labels],
        "matrix": confusion(y_true, y_pred, labels).tolist(),
    }
    positions = class_positions(np.asarray(classes), np.asarray(y_true))
    known = positions >= 0  # a label the model never saw has no probability column
    costs = {
        "cross_entropy": cross_entropy(proba[known], positions[known]),
        # The squared distance of the probabilities to the one-hot target: the Brier
        # score. Not the exercise's "cost" of a net, which uses its raw output
        # activations (squared_distance_cost on those; the lab reports that one).
        "brier_score": squared_distance_cost(proba[known], positions[known]),
    }
    if proba.shape[1] == 2:
        costs["binary_cross_entropy"] = binary_cross_entropy(proba[known, 1], positions[known])
    result["costs"] = costs
    return result
