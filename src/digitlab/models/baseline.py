"""Baselines every real model must beat: random scores, and always the majority class."""

from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np

from digitlab.models.base import ArraySpec, DigitClassifier
from digitlab.models.settings import Seed, SettingsSpec


class Majority(DigitClassifier):
    """Always predicts the most frequent training class (ties: the smallest label).

    Its probabilities are the training class frequencies, the best constant
    guess; its accuracy is the bar that "91% accurate" has to be read against.
    """

    kind: ClassVar[str] = "majority"
    default_validation: ClassVar[float] = 0.0  # chooses nothing
    _state_names: ClassVar[tuple[str, ...]] = ("class_prior_",)

    def __init__(self) -> None:
        pass

    def _fit(self, X: np.ndarray, y_index: np.ndarray) -> None:
        counts = np.bincount(y_index, minlength=len(self.classes_))
        self.class_prior_ = (counts / counts.sum()).astype(np.float64)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        return np.tile(np.log(self.class_prior_ + 1e-300), (len(X), 1))

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        return {"class_prior_": ArraySpec((n_classes,), values="non-negative")}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self._class_scores(X)  # checks fitted state and X
        return np.tile(self.class_prior_, (len(X), 1))


class RandomScores(DigitClassifier):
    """The "random classifier" of the classic exercise: random scores per image.

    Each image gets ``n_classes`` scores drawn uniformly from [0, 1); the largest
    wins, so accuracy is about 1 / n_classes. Scores are drawn from a generator
    seeded by ``random_state`` and the bytes of ``X``, so the same images always get the
    same answer (reproducible figures) while different images get different ones.

    Parameters
    ----------
    random_state : int, optional
        Seed of the scores. (Only an int or None: the scores must not depend on
        how often ``predict`` was called.)
    """

    kind: ClassVar[str] = "random"
    default_validation: ClassVar[float] = 0.0  # chooses nothing
    # The seed of every prediction, so an int: a Generator's draws would change them.
    settings_spec: ClassVar[SettingsSpec] = {"random_state": Seed(generator=False)}
    _state_names: ClassVar[tuple[str, ...]] = ("seed_",)
    _record_names: ClassVar[tuple[str, ...]] = ("seed_",)  # a seed, nothing learned

    def __init__(self, *, random_state: int | None = None) -> None:
        self.random_state = random_state

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        return {"seed_": ArraySpec((), "int", values="non-negative")}

    def _fit(self, X: np.ndarray, y_index: np.ndarray) -> None:
        seed = self.random_state if self.random_state is not None else np.random.default_rng().integers(2**32)
        self.seed_ = np.array(seed, dtype=np.int64)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        digest = zlib.crc32(np.ascontiguousarray(X).tobytes())
        generator = np.random.default_rng([int(self.seed_), digest])
        return generator.random((len(X), len(self.classes_)))
