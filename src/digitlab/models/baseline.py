"""Baselines every real model must beat: random scores, and always the majority class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from digitlab.models.base import ArraySpec, DigitClassifier
from digitlab.models.settings import Seed, SettingsSpec

if TYPE_CHECKING:
    from sklearn.utils import Tags


class Majority(DigitClassifier):
    """Always predicts the most frequent training class (ties: the smallest label).

    Its probabilities are the training class frequencies, the best constant
    guess; its accuracy is the bar that "91% accurate" has to be read against.
    """

    kind: ClassVar[str] = "majority"
    default_validation: ClassVar[float] = 0.0  # chooses nothing
    reads_pixels: ClassVar[bool] = False  # the class counts and len(X) are all it uses
    _state_names: ClassVar[tuple[str, ...]] = ("class_prior_",)
    _array_roles: ClassVar[Mapping[str, str]] = {"class_prior_": "class frequencies"}

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

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # one constant answer by design, as DummyClassifier
        return tags


class RandomScores(DigitClassifier):
    """The "random classifier" of the classic exercise: random scores per image.

    Each image gets ``n_classes`` scores uniform in [0, 1); the largest wins, so
    accuracy is about 1 / n_classes. Each image's scores are a hash of
    ``random_state`` and that image's pixels alone (:func:`row_uniforms`), so
    an image gets the same answer in any batch, order or subset (scikit-learn's
    invariance checks; reproducible figures) while different images get
    different ones.

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
    _stored_names: ClassVar[tuple[str, ...]] = ("seed_",)  # a seed, not a learned parameter

    def __init__(self, *, random_state: int | None = None) -> None:
        self.random_state = random_state

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        return {"seed_": ArraySpec((), "int", values="non-negative")}

    def _fit(self, X: np.ndarray, y_index: np.ndarray) -> None:
        seed = self.random_state if self.random_state is not None else np.random.default_rng().integers(2**32)
        self.seed_ = np.array(seed, dtype=np.int64)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        # Model files written before this hash (scores drawn from a generator seeded by
        # the seed and a CRC of the whole batch) hold the same seed_ and still load;
        # their scores, hence predictions, differ from what they gave then.
        return row_uniforms(X, int(self.seed_), len(self.classes_))

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # chance accuracy by design: the bar to beat
        return tags


# ---------------------------------------------------------------- per-image hashing

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: splitmix64's increment
_ROWS_PER_BLOCK = 1024  # bounds the (rows, n_features) uint64 temporaries to a few MB


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function of ``x + golden``, element-wise on uint64 (wrapping):
    each input bit flips about half the output bits, so nearby inputs give unrelated outputs."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hashes(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's float32 bits, shape (n_samples,) uint64.

    Each pixel's bits are mixed with its column index, then the row's mixed
    words are XORed together: a function of that row alone (so of no other row,
    nor of its place in the batch), vectorised a block of rows at a time.
    """
    # + 0.0 makes -0.0 into 0.0: the same picture, the same bits.
    bits = np.ascontiguousarray(np.asarray(X, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    columns = np.arange(bits.shape[1], dtype=np.uint64) << np.uint64(32)  # (d,): index in the high half
    hashes = np.empty(len(bits), dtype=np.uint64)
    for start in range(0, len(bits), _ROWS_PER_BLOCK):
        block = bits[start : start + _ROWS_PER_BLOCK].astype(np.uint64) | columns  # (b, d)
        hashes[start : start + _ROWS_PER_BLOCK] = np.bitwise_xor.reduce(splitmix64(block), axis=1)
    return hashes


def row_uniforms(X: np.ndarray, seed: int, k: int) -> np.ndarray:
    """``k`` numbers uniform in [0, 1) per row of ``X``, shape (n_samples, k) float64: a
    function of (``seed``, the row's bits, the column 0..k-1) only."""
    key = splitmix64(np.uint64(seed) ^ splitmix64(np.arange(k, dtype=np.uint64)))  # (k,)
    words = splitmix64(row_hashes(X)[:, None] ^ key)  # (n, k)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53  # the top 53 bits: exact floats
