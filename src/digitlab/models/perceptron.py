"""The perceptron rule (Rosenblatt), one-vs-rest for more than two classes.

On a mistake, ``w += lr * y * x`` and ``b += lr * y`` with ``y`` in {-1, +1};
one weight vector for two classes, one per class (one-vs-rest) for more, all
classes updated together per sample. The averaged variant returns the mean of
the weights over every step. The perceptron found by random search is in
:mod:`digitlab.models.guess_and_check`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from digitlab.models.base import (
    ArraySpec,
    DigitClassifier,
    class_weights,
    fit_temperature,
    linear_scores,
    softmax,
)
from digitlab.models.settings import ClassWeight, Flag, Integer, Number, Seed, SettingsSpec
from digitlab.models.training import Callback, run_epochs

# Samples gathered per stretch of a perceptron epoch, and the most scored at once.
_SEGMENT = 4096
_MAX_BLOCK = 1024


class Perceptron(DigitClassifier):
    """Rosenblatt's perceptron rule; one-vs-rest for more than two classes.

    Weights start at zero. Each epoch visits the training samples (shuffled
    unless ``shuffle=False``); for every class whose side the sample is on the
    wrong side of (score ``<= 0`` for its own class, ``>= 0`` for the others),
    ``w_c += lr * y_c * x`` and ``b_c += lr * y_c`` with ``y_c = +1`` for the
    sample's class and ``-1`` otherwise. Two classes use one weight vector
    (``classes_[1]`` when ``w·x + b >= 0``); more use one per class and predict
    the largest score.

    Parameters
    ----------
    lr : float
        Step size. Starting from zero weights it only scales them, so it does
        not change any prediction; it is here because the classic rule has it.
    epochs : int
        Most passes over the training data.
    averaged : bool
        Return the average of the weights over every step (the averaged
        perceptron), computed in O(1) extra work per update. Steadier and
        usually more accurate on data that is not separable; the default.
    shuffle : bool
        Visit the samples in a new random order every epoch.
    tol : float or None
        Stop when the training accuracy has not risen by more than ``tol`` for
        ``n_iter_no_change`` epochs; ``None`` always runs ``epochs`` epochs.
    n_iter_no_change : int
        Epochs without improvement before stopping.
    class_weight : None, "balanced" or dict of label to float
        Multiplies every update a sample makes by its class's weight (as
        scikit-learn's ``class_weight``): ``"balanced"`` weighs class ``c`` by
        ``n_samples / (n_classes * count_c)``; a dict gives weights by label (1
        for labels it leaves out). Which samples are mistakes is unchanged.
    random_state : int, numpy.random.Generator or None
        The shuffling order. An int gives identical weights on every fit.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    history_ : dict of lists, one entry per epoch
        ``mistakes`` (updates made during the epoch, summed over classes),
        ``errors`` (training samples misclassified by the weights after the
        epoch, averaged if ``averaged``) and ``accuracy`` (training accuracy).
    n_iter_ : int
        Epochs run.
    kept_epoch_ : int
        The epoch whose weights the model holds (the best monitored one when
        it ends with the best weights, else the last).
    """

    kind: ClassVar[str] = "perceptron"
    min_classes: ClassVar[int] = 2
    settings_spec: ClassVar[SettingsSpec] = {
        "lr": Number(0.0, closed="neither"),
        "epochs": Integer(1),
        "averaged": Flag(),
        "shuffle": Flag(),
        "tol": Number(0.0, none=True),
        "n_iter_no_change": Integer(1),
        "class_weight": ClassWeight(),
        "random_state": Seed(),
    }
    _state_names: ClassVar[tuple[str, ...]] = ("coef_", "intercept_", "temperature_")

    def __init__(
        self,
        *,
        lr: float = 1.0,
        epochs: int = 10,
        averaged: bool = True,
        shuffle: bool = True,
        tol: float | None = 1e-3,
        n_iter_no_change: int = 5,
        class_weight: str | dict[int, float] | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.lr = lr
        self.epochs = epochs
        self.averaged = averaged
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, *, callback: Callback | None = None) -> Perceptron:
        """Train on ``X`` (n_samples, n_features) and ``y`` (n_samples,).

        Parameters
        ----------
        callback : callable(Progress), optional
            Called after every epoch with ``Progress("epoch", epoch, epochs,
            {"mistakes": .., "errors": .., "accuracy": ..})``.
        """
        self._checked_fit(X, y, callback=callback)
        return self

    def _fit(
        self, X: np.ndarray, y_index: np.ndarray, *, callback: Callback | None = None
    ) -> None:
        lr, epochs, patience = float(self.lr), int(self.epochs), int(self.n_iter_no_change)
        tol = None if self.tol is None else float(self.tol)
        n_classes = len(self.classes_)
        rng = np.random.default_rng(self.random_state)

        n = len(X)
        # Two classes: one output, +1 for classes_[1]. More: one output per class.
        outputs = np.array([1]) if n_classes == 2 else np.arange(n_classes)
        signs = np.where(y_index[:, None] == outputs, 1.0, -1.0)  # (n, K)
        weights = class_weights(self.class_weight, self.classes_, y_index)
        if weights is not None:
            # A positive factor keeps each sign (so which samples are mistakes) and
            # scales the updates the sample makes: w += lr * weight * y * x.
            signs *= weights[y_index][:, None]
        rule = _PerceptronRule(X, signs, lr=lr, averaged=bool(self.averaged))

        def train_epoch(epoch: int) -> None:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            rule.epoch(order)
            self.coef_, self.intercept_ = rule.weights()

        sample_weight = None if weights is None else weights[y_index]

        def evaluate() -> dict[str, float]:
            right = _class_index(self._scores(X)) == y_index
            errors = n - int(np.count_nonzero(right))
            logs = {"mistakes": float(rule.last_mistakes), "errors": float(errors),
                    "accuracy": 1 - errors / n}
            if sample_weight is not None:  # what the class weights ask for
                logs["weighted_accuracy"] = float(sample_weight[right].sum() / sample_weight.sum())
            return logs

        result = run_epochs(
            epochs=epochs,
            train_epoch=train_epoch,
            evaluate=evaluate,
            # With class weights, stop when the weighted accuracy stops rising: the plain
            # one may stall while the rare class (weighed up) is still being learned.
            monitor="accuracy" if sample_weight is None else "weighted_accuracy",
            mode="max",
            tol=0.0 if tol is None else tol,
            n_iter_no_change=patience,
            early_stopping=tol is not None,
            callback=callback,
        )
        self.coef_, self.intercept_ = rule.weights()  # also right after Ctrl-C mid-epoch
        # Perceptron margins have no scale: fit one temperature so probabilities are usable.
        self.temperature_ = np.array(fit_temperature(self._scores(X), y_index))
        self.history_ = result.history
        self.n_iter_ = result.epochs_run
        self.kept_epoch_ = result.kept_epoch
        self.interrupted_ = result.interrupted

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        n_out = 1 if n_classes == 2 else n_classes  # one weight vector for two classes
        return {
            "coef_": ArraySpec((n_out, n_features)),
            "intercept_": ArraySpec((n_out,)),
            "temperature_": ArraySpec((), values="positive"),  # scores are divided by it
        }

    def _scores(self, X: np.ndarray) -> np.ndarray:
        scores = linear_scores(X, self.coef_, self.intercept_)
        return _two_column(scores[:, 0]) if len(self.classes_) == 2 else scores

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self._class_scores(X) / float(self.temperature_))

    def linear_weights(self) -> np.ndarray:
        return np.asarray(self.coef_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        scores = self._class_scores(X)  # checks the fitted state first
        return self.classes_[_class_index(scores)]

    def binary_decision(self, X: np.ndarray) -> np.ndarray:
        """``w·x + b`` in float64, shape (n_samples,), for a two-class model."""
        scores = self._class_scores(X)
        if len(self.classes_) != 2:
            raise ValueError(
                f"binary_decision needs a two-class model; this one has {len(self.classes_)}"
            )
        return scores[:, 1] * 2.0  # the scores are -s/2, s/2: exact


# ---------------------------------------------------------------- perceptron rule


class _PerceptronRule:
    """The perceptron update for ``K`` outputs at once, with an optional running average.

    The bias is folded in as a last input fixed at 1, so one update touches
    ``W`` of shape (K, d + 1) only. To skip Python work on the samples that are
    already right, scores are computed for a block of upcoming samples in one
    product; samples before the first mistake in the block need no update, and
    after an update the block is scored again from the next sample on. The
    block grows while mistakes are rare and shrinks while they are common.

    Averaging uses the standard trick: with ``t`` the number of samples seen
    before an update ``delta``, ``U += t * delta``; after ``T`` samples the mean
    of the weights after each of them is ``W - U / T``.
    """

    def __init__(self, X: np.ndarray, signs: np.ndarray, *, lr: float, averaged: bool) -> None:
        n, d = X.shape
        self.X1 = np.empty((n, d + 1), dtype=np.float32)
        self.X1[:, :d] = X
        self.X1[:, d] = 1.0
        self.signs = signs  # (n, K), +1 / -1, times the sample's class weight if any
        self.lr, self.averaged = lr, averaged
        self.W = np.zeros((signs.shape[1], d + 1))
        self.U = np.zeros_like(self.W) if averaged else None
        self.t = 0
        self.last_mistakes = 0
        self._gap = 1.0
        self._buffer = np.empty((min(n, _SEGMENT), d + 1))

    def epoch(self, order: np.ndarray) -> None:
        n = len(order)
        if self.last_mistakes == 0 and self.t > 0:
            # The last epoch changed nothing, so neither can this one (in any order).
            self.t += n
            return
        W, U, lr = self.W, self.U, self.lr
        mistakes = 0
        for start in range(0, n, _SEGMENT):
            # This stretch of the epoch's samples, gathered once as float64 so the
            # blocks below are contiguous slices and the products pure float64.
            seg = order[start : start + _SEGMENT]
            m, pos = len(seg), 0
            X1 = self._buffer[:m]  # (m, d + 1)
            X1[...] = self.X1[seg]
            signs = self.signs[seg]  # (m, K)
            while pos < m:
                size = max(1, min(_MAX_BLOCK, round(2 * self._gap)))
                margins = X1[pos : pos + size] @ W.T  # (b, K); y * score <= 0 is a mistake
                margins *= signs[pos : pos + size]
                wrong = margins <= 0
                first = int(np.argmax(wrong.any(axis=1)))
                if not wrong[first].any():
                    self.t += len(margins)
                    pos += len(margins)
                    self._gap = 0.75 * self._gap + 0.25 * 2 * len(margins)
                    continue
                self.t += first
                step = lr * signs[pos + first] * wrong[first]  # (K,), 0 where that class was right
                delta = np.outer(step, X1[pos + first])
                W += delta
                if U is not None:
                    U += self.t * delta
                mistakes += int(np.count_nonzero(wrong[first]))
                self.t += 1
                pos += first + 1
                # Blocks of about twice the typical gap between mistakes.
                self._gap = 0.75 * self._gap + 0.25 * (first + 1)
        self.last_mistakes = mistakes

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef, intercept)`` of shapes (K, d) and (K,): the average if averaging."""
        W = self.W if self.U is None or self.t == 0 else self.W - self.U / self.t
        return W[:, :-1].copy(), W[:, -1].copy()


# ---------------------------------------------------------------- shared helpers


def _class_index(scores: np.ndarray) -> np.ndarray:
    """Predicted class positions from scores (n, n_classes); two classes: ``s >= 0`` is class 1."""
    if scores.shape[1] == 2:  # [-s/2, s/2]: argmax would send s == 0 to class 0
        return (scores[:, 1] >= 0).astype(np.int64)
    return np.argmax(scores, axis=1)


def _two_column(score: np.ndarray) -> np.ndarray:
    """(n,) score -> (n, 2) scores ``[-s/2, s/2]``: their softmax is ``sigmoid(s)``."""
    half = 0.5 * score
    return np.column_stack([-half, half])
