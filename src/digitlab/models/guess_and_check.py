"""Guess and check: the perceptron found by random search, the classic first exercise.

Draw random weights ``w ~ U(-1, 1)`` per pixel and a bias ``b ~ U(-20, 20)``,
count the training images the candidate gets right (it says "yes" when
``w·x + b >= 0``), keep the best, repeat. :func:`guess_and_check_plain` is
that loop as the exercise writes it. ``GuessAndCheck`` runs it with
``engine="plain"``; by default it runs the same search in
:mod:`digitlab.models.guess_and_check_engine`, over 100x faster, which picks
the very same candidate (same weights, same history, bit for bit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from digitlab.models import guess_and_check_engine
from digitlab.models.base import ArraySpec, DigitClassifier, linear_scores
from digitlab.models.perceptron import _class_index, _two_column
from digitlab.models.settings import Integer, Number, OneOf, Seed, SettingsSpec
from digitlab.models.training import Callback, Progress

if TYPE_CHECKING:
    from sklearn.utils import Tags

ENGINES = ("fast", "plain")


class BestSoFar:
    """The best candidate so far, and the best accuracy each time it improved."""

    def __init__(
        self, n_rows: int, n_features: int, n_candidates: int, callback: Callback | None = None
    ) -> None:
        self.n_rows, self.n_candidates, self.callback = n_rows, n_candidates, callback
        self.count, self.index = -1, -1  # right answers and position (0-based); none yet
        self.w, self.b = np.zeros(n_features), 0.0
        self.tried = 0
        self.history: dict[str, list[Any]] = {"candidate": [], "best_accuracy": []}

    def offer(self, i: int, count: int, w: np.ndarray, b: float) -> None:
        """Keep candidate ``i`` if it gets more rows right than the best so far."""
        if count <= self.count:  # strict: the first of equals wins
            return
        self.count, self.index = count, i
        self.w, self.b = np.array(w, dtype=np.float64), float(b)  # a copy
        self.history["candidate"].append(i)
        self.history["best_accuracy"].append(count / self.n_rows)
        if self.callback is not None:
            logs = {"accuracy": count / self.n_rows}
            self.callback(Progress("best", i + 1, self.n_candidates, logs))

    def tried_up_to(self, done: int) -> None:
        """Candidates ``0 .. done - 1`` have all been offered."""
        self.tried = done
        if self.callback is not None:
            logs = {"best_accuracy": self.count / self.n_rows}
            self.callback(Progress("candidates", done, self.n_candidates, logs))


def guess_and_check_plain(
    X: np.ndarray,
    positive: np.ndarray,
    n_candidates: int,
    *,
    weight_range: float = 1.0,
    bias_range: float = 20.0,
    rng: int | np.random.Generator | None = None,
    best: BestSoFar | None = None,
) -> BestSoFar:
    """The exercise as written: one candidate at a time, every row scored in float64.

    ``X`` is (n_samples, n_features), ``positive`` (n_samples,) is True where
    the answer is "yes". Returns the best candidate (``.w``, ``.b``,
    ``.index``, ``.count``) and its ``.history``; pass ``best`` to collect
    into one you hold (it keeps the best so far after Ctrl-C).
    """
    rng = np.random.default_rng(rng)
    n, d = len(X), int(X.shape[1])  # images, pixels per image
    best = BestSoFar(n, d, n_candidates) if best is None else best
    X64 = X.astype(np.float64)  # the exercise's float64 features
    for i in range(n_candidates):
        w = rng.uniform(-weight_range, weight_range, d)
        b = rng.uniform(-bias_range, bias_range)
        count = int(np.count_nonzero((X64 @ w + b >= 0) == positive))
        best.offer(i, count, w, b)
        best.tried_up_to(i + 1)
    return best


class GuessAndCheck(DigitClassifier):
    """The perceptron found by random search, for two classes.

    Candidate ``i`` is ``w_i ~ U(-weight_range, weight_range)`` per feature and
    ``b_i ~ U(-bias_range, bias_range)``; the candidate with the best training
    accuracy wins (the first one on ties). It predicts the positive class,
    ``classes_[1]``, when ``w·x + b >= 0``.

    Parameters
    ----------
    n_candidates : int
        How many random candidates to try.
    weight_range : float
        Weights are uniform on ``[-weight_range, weight_range)``.
    bias_range : float
        The bias is uniform on ``[-bias_range, bias_range)``.
    batch_size : int
        Candidates the fast engine draws and races together (the first chunks
        are smaller); see :func:`digitlab.models.guess_and_check_engine.search`.
    engine : {"fast", "plain"}
        ``"plain"`` runs :func:`guess_and_check_plain`, one candidate at a time;
        ``"fast"`` runs the speed engine (exact int8 products on pixel
        features when torch is imported or the search is long, float32
        otherwise). Both give the same model.
    random_state : int, numpy.random.Generator or None
        The random numbers. An int gives the same candidates, and so the same
        weights, on every fit.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,), float64
        The winning weights, bit for bit the numbers the plain loop draws.
    intercept_ : ndarray of shape (), float64
        The winning bias.
    best_candidate_ : ndarray of shape (), int64
        The winner's position (0-based) in the sequence of candidates.
    best_train_accuracy_ : ndarray of shape (), float64
        Its training accuracy.
    history_ : dict of lists
        ``candidate`` (0-based position) and ``best_accuracy`` at every new best:
        the accuracy-versus-candidates curve. Not part of the saved state.
    n_tried_ : int
        Candidates tried (fewer than ``n_candidates`` after Ctrl-C).
    """

    kind: ClassVar[str] = "guess-and-check"
    binary_only: ClassVar[bool] = True
    min_classes: ClassVar[int] = 2
    settings_spec: ClassVar[SettingsSpec] = {
        "n_candidates": Integer(1),
        "weight_range": Number(0.0, closed="neither"),
        "bias_range": Number(0.0),
        "batch_size": Integer(1),
        "engine": OneOf(ENGINES),
        "random_state": Seed(),
    }
    _state_names: ClassVar[tuple[str, ...]] = (
        "coef_",
        "intercept_",
        "best_candidate_",
        "best_train_accuracy_",
    )
    # The search's record, kept in the file; the learned parameters are 784 weights + 1 bias.
    _stored_names: ClassVar[tuple[str, ...]] = ("best_candidate_", "best_train_accuracy_")

    def __init__(
        self,
        *,
        n_candidates: int = 5000,
        weight_range: float = 1.0,
        bias_range: float = 20.0,
        batch_size: int = 2048,
        engine: str = "fast",
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.n_candidates = n_candidates
        self.weight_range = weight_range
        self.bias_range = bias_range
        self.batch_size = batch_size
        self.engine = engine
        self.random_state = random_state

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, callback: Callback | None = None
    ) -> GuessAndCheck:
        """Search ``n_candidates`` random perceptrons on ``X`` (n_samples, n_features), ``y`` (n_samples,).

        Parameters
        ----------
        callback : callable(Progress), optional
            Called with ``Progress("best", i + 1, n_candidates, {"accuracy": a})``
            when candidate ``i`` (0-based) is a new best, and with
            ``Progress("candidates", done, n_candidates, {"best_accuracy": a})``
            after every chunk (every candidate with the plain engine).
        """
        self._checked_fit(X, y, callback=callback)
        return self

    def _fit(
        self, X: np.ndarray, y_index: np.ndarray, *, callback: Callback | None = None
    ) -> None:
        n_candidates = int(self.n_candidates)
        best = BestSoFar(len(X), X.shape[1], n_candidates, callback)
        search: dict[str, Any] = {"weight_range": float(self.weight_range),
                                  "bias_range": float(self.bias_range),
                                  "rng": np.random.default_rng(self.random_state), "best": best}
        self.interrupted_ = False
        try:
            if self.engine == "plain":
                guess_and_check_plain(X, y_index == 1, n_candidates, **search)
            else:
                guess_and_check_engine.search(
                    X, y_index == 1, n_candidates, batch_size=int(self.batch_size), **search
                )
        except KeyboardInterrupt:
            if best.index < 0:  # Ctrl-C before any candidate: nothing to keep
                raise
            self.interrupted_ = True  # keep the best so far, as the epoch loops do
        self.coef_ = best.w
        self.intercept_ = np.array(best.b, dtype=np.float64)
        self.best_candidate_ = np.array(best.index, dtype=np.int64)
        self.best_train_accuracy_ = np.array(best.count / len(X), dtype=np.float64)
        self.history_ = best.history
        self.n_tried_ = best.tried

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        return {
            "coef_": ArraySpec((n_features,)),
            "intercept_": ArraySpec(()),
            "best_candidate_": ArraySpec((), "int"),
            "best_train_accuracy_": ArraySpec(()),
        }

    # ------------------------------------------------------------ predict

    def binary_decision(self, X: np.ndarray) -> np.ndarray:
        """``w·x + b`` in float64, shape (n_samples,); ``>= 0`` means ``classes_[1]``."""
        return self._class_scores(X)[:, 1] * 2.0  # the scores are -s/2, s/2: exact

    def _scores(self, X: np.ndarray) -> np.ndarray:
        return _two_column(linear_scores(X, self.coef_[None, :], self.intercept_[None])[:, 0])

    def linear_weights(self) -> np.ndarray:
        return np.asarray(self.coef_)[None, :]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_samples,): ``classes_[1]`` where ``w·x + b >= 0``."""
        scores = self._class_scores(X)  # checks the fitted state first
        return self.classes_[_class_index(scores)]

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # two classes only
        return tags
