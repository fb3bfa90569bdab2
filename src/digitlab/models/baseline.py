"""Baselines every real model must beat: always the majority class."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from digitlab.models.base import DigitClassifier


class Majority(DigitClassifier):
    """Always predicts the most frequent training class (ties: the smallest label).

    Its probabilities are the training class frequencies, the best constant
    guess; its accuracy is the bar that "91% accurate" has to be read against.
    """

    kind: ClassVar[str] = "majority"
    _state_names: ClassVar[tuple[str, ...]] = ("class_prior_",)

    def __init__(self) -> None:
        pass

    def _fit(self, X: np.ndarray, y_index: np.ndarray) -> None:
        counts = np.bincount(y_index, minlength=len(self.classes_))
        self.class_prior_ = (counts / counts.sum()).astype(np.float64)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        return np.tile(np.log(self.class_prior_ + 1e-300), (len(X), 1))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.decision_function(X)  # checks fitted state and X
        return np.tile(self.class_prior_, (len(X), 1))
