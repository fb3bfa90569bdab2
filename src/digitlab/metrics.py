"""How good a model really is: accuracy beside the baseline it has to beat."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    return float(accuracy_score(y_true, y_pred))


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``y_test`` of always answering the most frequent training label.

    Ties go to the smallest label, as ``np.argmax`` on the counts does.
    """
    values, counts = np.unique(y_train, return_counts=True)
    majority = values[np.argmax(counts)]
    return float(np.mean(np.asarray(y_test) == majority))
