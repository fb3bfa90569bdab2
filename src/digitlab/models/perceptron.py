"""Two perceptrons: one found by random search, one by Rosenblatt's learning rule.

``GuessAndCheck`` is the classic first exercise: draw random weights
``w ~ U(-1, 1)`` per pixel and a bias ``b ~ U(-20, 20)``, keep the candidate
with the best training accuracy, predict "yes" when ``w·x + b >= 0``. Written
plainly that is one pass over the training set per candidate; here a chunk of
candidates is scored by one float32 matrix product, and candidates that can no
longer beat the best so far are dropped part-way through the training set
(their errors only grow). The random numbers are drawn in the plain loop's
order, so a seed picks exactly the candidate the plain loop picks (see
``GuessAndCheck`` for how float32 is kept from changing the answer).

``Perceptron`` is the learning rule: on a mistake, ``w += lr * y * x`` and
``b += lr * y`` with ``y`` in {-1, +1}; one weight vector for two classes,
one per class (one-vs-rest) for more, all classes updated together per sample.
The averaged variant returns the mean of the weights over every step.
"""

from __future__ import annotations

import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from digitlab.errors import SettingsError
from digitlab.models.base import (
    ArraySpec,
    DigitClassifier,
    check_class_weight,
    class_weights,
    fit_temperature,
    softmax,
)
from digitlab.models.training import Callback, Progress, run_epochs

if TYPE_CHECKING:
    from sklearn.utils import Tags

# float32 unit roundoff: every float32 operation is exact to a relative 2**-24.
_U32 = float(np.finfo(np.float32).eps) / 2
# Guess and check. Rows per matrix product are picked so a block of scores holds
# between _MIN_CELLS and _MAX_CELLS numbers (bounded memory), and within
# _MIN_ROWS .. _MAX_ROWS rows.
_MIN_CELLS = 2**18
_MAX_CELLS = 2**21
_MIN_ROWS = 256
_MAX_ROWS = 8192
# The first chunk of candidates is small, so the later ones have a best count to
# race against; chunks then grow fourfold up to batch_size.
_FIRST_CHUNK = 16
_MIN_DRAW = 256  # candidates per thread worth drawing in parallel
# Rows on which a candidate's "yes" rate is measured to choose its visiting order.
_SAMPLE_ROWS = 256
# Worker threads for the candidate races (at most), and candidates per race (at least).
_MAX_WORKERS = 8
_MIN_TASK = 64
_TASKS_PER_WORKER = 2
# Samples gathered per stretch of a perceptron epoch, and the most scored at once.
_SEGMENT = 4096
_MAX_BLOCK = 1024


class GuessAndCheck(DigitClassifier):
    """The perceptron found by random search, for two classes.

    Candidate ``i`` is ``w_i ~ U(-weight_range, weight_range)`` per feature and
    ``b_i ~ U(-bias_range, bias_range)``; the candidate with the best training
    accuracy wins (the first one on ties, as a strict ``>`` in the plain loop
    does). It predicts the positive class, ``classes_[1]``, when
    ``w·x + b >= 0``.

    Parameters
    ----------
    n_candidates : int
        How many random candidates to try.
    weight_range : float
        Weights are uniform on ``[-weight_range, weight_range)``.
    bias_range : float
        The bias is uniform on ``[-bias_range, bias_range)``.
    batch_size : int
        Candidates drawn and raced together (the first chunks are smaller).
        Memory is about ``batch_size * (n_features + 1) * 20`` bytes for the
        candidates plus 16 MB of scores per core, whatever the training size,
        besides a float32 copy of the smaller class's training rows.
    rng : int, numpy.random.Generator or None
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

    Notes
    -----
    **Same draws as the plain loop.** The plain loop draws, per candidate,
    ``w = rng.uniform(-1, 1, d)`` then ``b = rng.uniform(-20, 20)``. NumPy's
    ``uniform`` is ``low + (high - low) * rng.random()`` in float64, so one
    ``rng.random((k, d + 1))`` per chunk, scaled by the same formula, gives the
    same numbers bit for bit, in the same order, for any chunk size.

    **Same pick as the plain loop.** Scores are computed in float32, which can
    put a score that lies very close to 0 on the wrong side. For every
    training row a bound ``tol`` on the float32 error is known in advance
    (``|w·x + b|`` in float32 is off by at most about ``(d + 3) * 2**-24 *
    (weight_range * |x|_1 + bias_range)``, whatever the summation order; ``tol``
    is twice that). A float32 score further than ``tol`` from 0 has the sign
    the float64 score has; only the few rows within ``tol`` of 0 are unsure.
    Candidates are dropped when even counting every unsure row as correct
    cannot beat the best so far, and every candidate that still could is
    counted exactly: its unsure rows are scored again in float64, the way the
    plain loop scores them. So the chosen candidate and its accuracy are the
    float64 loop's. The one case left is a float64 score within float64
    rounding (about 1e-13) of 0, where the plain loop's own answer depends on
    its BLAS's summation order.
    """

    kind: ClassVar[str] = "guess-and-check"
    binary_only: ClassVar[bool] = True
    min_classes: ClassVar[int] = 2
    _state_names: ClassVar[tuple[str, ...]] = (
        "coef_",
        "intercept_",
        "best_candidate_",
        "best_train_accuracy_",
    )

    def __init__(
        self,
        *,
        n_candidates: int = 5000,
        weight_range: float = 1.0,
        bias_range: float = 20.0,
        batch_size: int = 2048,
        rng: int | np.random.Generator | None = None,
    ) -> None:
        self.n_candidates = n_candidates
        self.weight_range = weight_range
        self.bias_range = bias_range
        self.batch_size = batch_size
        self.rng = rng

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
            after every chunk.
        """
        self._checked_fit(X, y, callback=callback)
        return self

    def _fit(
        self, X: np.ndarray, y_index: np.ndarray, *, callback: Callback | None = None
    ) -> None:
        n_candidates, batch_size, weight_range, bias_range = self._check_settings()
        _check_binary(self.classes_, "guess-and-check")
        rng = _make_rng(self.rng)
        with _CandidateScorer(X, y_index == 1, weight_range, bias_range) as scorer:
            self._search(scorer, rng, n_candidates, batch_size, weight_range, bias_range, callback)

    def _check_settings(self) -> tuple[int, int, float, float]:
        """``(n_candidates, batch_size, weight_range, bias_range)``, checked; ``rng`` checked too."""
        _make_rng(self.rng)  # only checked: a Generator comes back as it is, nothing drawn
        return (
            _check_int("n_candidates", self.n_candidates, 1),
            _check_int("batch_size", self.batch_size, 1),
            _check_real("weight_range", self.weight_range, positive=True),
            _check_real("bias_range", self.bias_range, positive=False),
        )

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        return {
            "coef_": ArraySpec((n_features,)),
            "intercept_": ArraySpec(()),
            "best_candidate_": ArraySpec((), "int"),
            "best_train_accuracy_": ArraySpec(()),
        }

    def _search(
        self,
        scorer: _CandidateScorer,
        rng: np.random.Generator,
        n_candidates: int,
        batch_size: int,
        weight_range: float,
        bias_range: float,
        callback: Callback | None,
    ) -> None:
        n, d = scorer.X.shape
        history: dict[str, list[Any]] = {"candidate": [], "best_accuracy": []}  # ints, floats
        best_count, best_index = -1, -1
        best_w = np.zeros(d)
        best_b = 0.0
        done, size = 0, _FIRST_CHUNK
        interrupted = False
        try:
            while done < n_candidates:
                # Chunks grow from small, so a best count to race against comes early.
                k = min(batch_size, size, n_candidates - done)
                size *= 4
                weights, biases, w32 = scorer.draw(rng, k, weight_range, bias_range)
                # Only candidates that may beat the best so far get an exact count.
                contenders, exact = scorer.contenders(weights, biases, bar=best_count, w32=w32)
                for j, count in zip(contenders.tolist(), exact.tolist(), strict=True):
                    if count > best_count:  # strict: the first of equals wins
                        best_count, best_index = count, done + j
                        best_w, best_b = weights[j].copy(), float(biases[j])
                        history["candidate"].append(best_index)
                        history["best_accuracy"].append(count / n)
                        if callback is not None:
                            callback(
                                Progress(
                                    "best", best_index + 1, n_candidates, {"accuracy": count / n}
                                )
                            )
                done += k
                if callback is not None:
                    callback(
                        Progress(
                            "candidates", done, n_candidates, {"best_accuracy": best_count / n}
                        )
                    )
        except KeyboardInterrupt:
            # Ctrl-C: keep the best so far, as the epoch loops do.
            if best_index < 0:
                raise
            interrupted = True
        self.interrupted_ = interrupted
        self.coef_ = best_w
        self.intercept_ = np.array(best_b, dtype=np.float64)
        self.best_candidate_ = np.array(best_index, dtype=np.int64)
        self.best_train_accuracy_ = np.array(best_count / n, dtype=np.float64)
        self.history_ = history
        self.n_tried_ = done

    # ------------------------------------------------------------ predict

    def binary_decision(self, X: np.ndarray) -> np.ndarray:
        """``w·x + b`` in float64, shape (n_samples,); ``>= 0`` means ``classes_[1]``."""
        return self.decision_function(X)[:, 1] * 2.0  # the scores are -s/2, s/2: exact

    def _scores(self, X: np.ndarray) -> np.ndarray:
        return _two_column(_linear_scores(X, self.coef_[None, :], self.intercept_[None])[:, 0])

    def linear_weights(self) -> np.ndarray:
        return np.asarray(self.coef_)[None, :]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_samples,): ``classes_[1]`` where ``w·x + b >= 0``."""
        scores = self.decision_function(X)  # checks the fitted state first
        return self.classes_[_class_index(scores)]

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # two classes only
        return tags


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
    rng : int, numpy.random.Generator or None
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
        rng: int | np.random.Generator | None = None,
    ) -> None:
        self.lr = lr
        self.epochs = epochs
        self.averaged = averaged
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.rng = rng

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
        lr, epochs, patience, tol = self._check_settings()
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise SettingsError(f"the perceptron needs at least two classes, got {n_classes}")
        rng = _make_rng(self.rng)

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

        def evaluate() -> dict[str, float]:
            errors = int(np.count_nonzero(_class_index(self._scores(X)) != y_index))
            return {
                "mistakes": float(rule.last_mistakes),
                "errors": float(errors),
                "accuracy": 1 - errors / n,
            }

        result = run_epochs(
            epochs=epochs,
            train_epoch=train_epoch,
            evaluate=evaluate,
            monitor="accuracy",
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

    def _check_settings(self) -> tuple[float, int, int, float | None]:
        """``(lr, epochs, n_iter_no_change, tol)``, checked; the other settings checked too."""
        for name in ("averaged", "shuffle"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise SettingsError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_class_weight(self.class_weight)
        _make_rng(self.rng)  # only checked: a Generator comes back as it is, nothing drawn
        return (
            _check_real("lr", self.lr, positive=True),
            _check_int("epochs", self.epochs, 1),
            _check_int("n_iter_no_change", self.n_iter_no_change, 1),
            None if self.tol is None else _check_real("tol", self.tol, positive=False),
        )

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        n_out = 1 if n_classes == 2 else n_classes  # one weight vector for two classes
        return {
            "coef_": ArraySpec((n_out, n_features)),
            "intercept_": ArraySpec((n_out,)),
            "temperature_": ArraySpec((), values="positive"),  # scores are divided by it
        }

    def _scores(self, X: np.ndarray) -> np.ndarray:
        scores = _linear_scores(X, self.coef_, self.intercept_)
        return _two_column(scores[:, 0]) if len(self.classes_) == 2 else scores

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X) / float(self.temperature_))

    def linear_weights(self) -> np.ndarray:
        return np.asarray(self.coef_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        scores = self.decision_function(X)  # checks the fitted state first
        return self.classes_[_class_index(scores)]

    def binary_decision(self, X: np.ndarray) -> np.ndarray:
        """``w·x + b`` in float64, shape (n_samples,), for a two-class model."""
        scores = self.decision_function(X)
        if len(self.classes_) != 2:
            raise ValueError(
                f"binary_decision needs a two-class model; this one has {len(self.classes_)}"
            )
        return scores[:, 1] * 2.0  # the scores are -s/2, s/2: exact


# ---------------------------------------------------------------- guess and check


class _CandidateScorer:
    """Exact training counts for chunks of candidates, dropping hopeless ones early.

    For each candidate a training row is *surely right*, *surely wrong* or
    *unsure* (float32 score within ``tol`` of 0). A candidate is dropped as
    soon as its possible right answers (sure plus unsure) plus the rows it has
    not seen cannot exceed the best count so far; only the survivors' unsure
    rows are scored again, in float64.

    To be dropped, a candidate has to collect ``n - best`` sure mistakes, so it
    should meet its mistakes early: a candidate that mostly says the minority
    class's opposite visits the minority rows first (a copy, usually the
    smaller part of the data), one that mostly says the minority class visits
    the majority rows first (blocks of the training set as it is, minority
    rows masked out). Which kind a candidate is comes from a small sample of
    rows; that choice only changes the speed, never the counts.
    """

    def __init__(self, X: np.ndarray, positive: np.ndarray, weight_range: float, bias_range: float):
        n, d = X.shape
        self.X, self.n = X, n
        self.positive = positive
        # The minority class gets a contiguous copy; the rest is read in place.
        self.minority_positive = bool(2 * positive.sum() <= n)
        minority = positive if self.minority_positive else ~positive
        self.minority_rows = np.flatnonzero(minority)
        self.minority_X = X[self.minority_rows]
        # |float32 score - exact score| <= gamma_(d+2) * (sum |x_k w_k| + |b|) for the
        # product and the bias add, plus 2**-24 relative for rounding w and b to
        # float32; sum |x_k w_k| <= weight_range * |x|_1. Twice that is safely above
        # the float64 loop's own error too.
        m = d + 3
        gamma = m * _U32 / (1 - m * _U32)
        l1 = np.empty(n)
        for start in range(0, n, _MAX_ROWS):  # in blocks: no temporary the size of X
            block = X[start : start + _MAX_ROWS]
            l1[start : start + len(block)] = np.abs(block).sum(axis=1, dtype=np.float64)
        tol64 = 2.0 * gamma * (1 + _U32) * (weight_range * l1 + bias_range) * (1 + 1e-6)
        tol = tol64.astype(np.float32)
        low = tol < tol64
        tol[low] = np.nextafter(tol[low], np.float32(np.inf))
        # Per-row thresholds, shape (rows, 1) to broadcast over candidates. A row of
        # class c is right when its score is >= 0 (c positive) or < 0 (negative):
        #   surely right: score > hi (positive) / score < lo (negative)
        #   maybe right:  score >= lo (positive) / score <= hi (negative)
        # In the in-place blocks the minority rows are masked out with +-inf.
        sign = -1 if self.minority_positive else 1  # so the masked rows are never right
        self.min_lo = (-tol[self.minority_rows])[:, None]
        self.min_hi = tol[self.minority_rows][:, None]
        mask = np.where(minority, np.float32(sign * np.inf), np.float32(0))
        self.maj_lo = np.where(minority, mask, -tol)[:, None]
        self.maj_hi = np.where(minority, mask, tol)[:, None]
        # majority_before[a]: majority rows among X[:a].
        self.majority_before = np.concatenate([[0], np.cumsum(~minority)])
        # Rows, spread over the data, on which each candidate's minority-answer rate is measured.
        self.sample = X[np.linspace(0, n - 1, min(n, _SAMPLE_ROWS)).astype(np.int64)]
        self.workers = max(1, min(_usable_cpus(), _MAX_WORKERS))
        self._pool: ThreadPoolExecutor | None = None
        self._stack = ExitStack()

    def __enter__(self) -> _CandidateScorer:
        if self.workers > 1:
            # One BLAS thread per worker: BLAS's own threads would fight ours for
            # the same cores. (scikit-learn's KMeans does the same.)
            self._stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
            self._pool = self._stack.enter_context(ThreadPoolExecutor(self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._stack.close()

    def draw(
        self, rng: np.random.Generator, k: int, weight_range: float, bias_range: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``k`` candidates drawn in the plain loop's order: per candidate, d weights then the bias.

        Returns float64 weights ``(k, d)`` and biases ``(k,)``, and the weights
        in float32. Drawing and scaling are a tenth of the work and would leave
        the other cores idle, so with PCG64 (numpy's default) the candidates are
        split between the worker threads: each part draws from a copy of the
        generator advanced past the parts before it (a double is one 64-bit
        draw), which gives the very numbers of one sequential draw.
        """
        d = self.X.shape[1]
        weights = np.empty((k, d))
        biases = np.empty(k)
        w32 = np.empty((k, d), dtype=np.float32)
        parallel = (self._pool is not None and type(rng.bit_generator) is np.random.PCG64
                    and k >= _MIN_DRAW * self.workers)
        bounds = np.linspace(0, k, self.workers + 1 if parallel else 2).astype(np.int64)
        start_state = dict(rng.bit_generator.state)
        generators = (
            [np.random.Generator(_pcg64_after(start_state, int(start) * (d + 1)))
             for start in bounds[:-1]]
            if parallel else [rng]
        )

        def fill(part: int) -> None:
            a, b = bounds[part], bounds[part + 1]
            uniforms = generators[part].random((b - a, d + 1))
            # The plain loop's uniform(low, high): low + (high - low) * u, in float64.
            np.multiply(uniforms[:, :d], weight_range - -weight_range, out=weights[a:b])
            weights[a:b] += -weight_range
            biases[a:b] = -bias_range + (bias_range - -bias_range) * uniforms[:, d]
            w32[a:b] = weights[a:b]

        if parallel:
            assert self._pool is not None
            list(self._pool.map(fill, range(len(generators))))
            # Leave the caller's generator where one sequential draw would have.
            end_state = dict(generators[-1].bit_generator.state)
            end_state["has_uint32"] = start_state["has_uint32"]
            end_state["uinteger"] = start_state["uinteger"]
            rng.bit_generator.state = end_state
        else:
            fill(0)
        return weights, biases, w32

    def contenders(
        self, weights: np.ndarray, biases: np.ndarray, *, bar: int, w32: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates that may get more than ``bar`` rows right, and their exact counts.

        Parameters
        ----------
        weights : ndarray of shape (k, n_features), float64
        biases : ndarray of shape (k,), float64
        bar : int
            The best count so far (-1 for none).
        w32 : ndarray of shape (k, n_features), float32, optional
            ``weights`` in float32, when the caller has them already.

        Returns
        -------
        positions : ndarray of shape (m,), int64
            Ascending positions in the chunk of every candidate whose count may
            exceed ``bar`` (every candidate whose count does is among them).
        counts : ndarray of shape (m,), int64
            Their exact numbers of right answers.
        """
        if w32 is None:
            w32 = weights.astype(np.float32)  # (k, d): BLAS reads it transposed, no copy
        b32 = biases.astype(np.float32)
        says_yes = ((self.sample @ w32.T + b32) >= 0).mean(axis=0) >= 0.5
        says_minority = says_yes if self.minority_positive else ~says_yes
        # Independent races, on worker threads when there are several cores: each
        # one is a long run of BLAS calls that release the GIL.
        tasks = []
        for group, minority_first in (
            (np.flatnonzero(~says_minority), True),
            (np.flatnonzero(says_minority), False),
        ):
            share = _TASKS_PER_WORKER * self.workers * len(group) // len(biases)
            parts = max(1, min(share, len(group) // _MIN_TASK))
            tasks += [(part, minority_first) for part in np.array_split(group, parts) if len(part)]

        def race(task: tuple[np.ndarray, bool]) -> tuple[np.ndarray, ...]:
            part, minority_first = task
            alive, right, rows, cands = self._race(w32[part], b32[part], bar, minority_first)
            return part[alive], right, rows, part[cands]

        results = (
            list(self._pool.map(race, tasks))
            if self._pool is not None
            else [race(t) for t in tasks]
        )
        positions, sure, unsure_rows, unsure_cands = (
            list(column) for column in zip(*results, strict=True)
        )
        order = np.argsort(np.concatenate(positions))
        survivors = np.concatenate(positions)[order]
        counts = np.concatenate(sure)[order]
        # The survivors' unsure rows, scored again the plain loop's way: X in float64 @ w + b >= 0.
        rows, cands = np.concatenate(unsure_rows), np.concatenate(unsure_cands)
        slot = np.full(len(biases), -1, dtype=np.int64)
        slot[survivors] = np.arange(len(survivors))
        keep = slot[cands] >= 0
        rows, cands = rows[keep], cands[keep]
        if len(rows):
            scores = (
                np.einsum("ij,ij->i", self.X[rows].astype(np.float64), weights[cands])
                + biases[cands]
            )
            right = (scores >= 0) == self.positive[rows]
            counts += np.bincount(slot[cands], weights=right, minlength=len(counts)).astype(
                np.int64
            )
        return survivors, counts

    def _block(
        self, pos: int, size: int, minority_first: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, bool]:
        """Rows ``pos .. pos + size`` of the visiting order (cut at the end of a part).

        The order is the minority copy then the training set in place, or the
        other way round. Returns ``(X block, lo, hi, rows counted, original row
        numbers, block is positive)``.
        """
        n_min = len(self.minority_rows)
        in_minority = pos < n_min if minority_first else pos >= self.n
        if in_minority:
            a = pos if minority_first else pos - self.n
            b = min(a + size, n_min)
            return (
                self.minority_X[a:b],
                self.min_lo[a:b],
                self.min_hi[a:b],
                b - a,
                self.minority_rows[a:b],
                self.minority_positive,
            )
        a = pos - n_min if minority_first else pos
        b = min(a + size, self.n)
        counted = int(self.majority_before[b] - self.majority_before[a])
        return (
            self.X[a:b],
            self.maj_lo[a:b],
            self.maj_hi[a:b],
            counted,
            np.arange(a, b),
            not self.minority_positive,
        )

    def _race(
        self, w32: np.ndarray, b32: np.ndarray, bar: int, minority_first: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Visit every row with candidates ``w32`` (k, d), ``b32`` (k,), dropping hopeless ones.

        Returns the surviving candidates (positions in ``b32``), their sure right
        answers, and the unsure ``(row, candidate)`` pairs met on the way.
        """
        k = len(b32)
        alive = np.arange(k)
        possible = np.zeros(k, dtype=np.int64)
        sure = np.zeros(k, dtype=np.int64)
        unsure_rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        unsure_cands: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        seen = pos = 0
        total = self.n + len(self.minority_rows)  # the in-place part has minority rows masked out
        w_alive, b_alive = w32, b32
        buffer = np.empty(0, dtype=np.float32)
        maybe_buffer = unsure_buffer = np.empty(0, dtype=bool)
        while pos < total:
            ka = len(alive)
            # No candidate can be dropped before its sure mistakes reach n - bar, so
            # take the rows up to the earliest possible drop in one product; after
            # that, small blocks while many candidates are alive (each is dropped
            # close to when it must be), larger ones as they thin out.
            size = _MAX_CELLS // ka
            if bar >= 0:
                most_wrong = int(np.max(seen - possible[:ka]))
                size = max(min(self.n - bar - most_wrong, size), _MIN_CELLS // ka)
            size = int(np.clip(size, _MIN_ROWS, _MAX_ROWS))
            block, lo, hi, counted, rows, positive = self._block(pos, size, minority_first)
            pos += len(block)
            # Into buffers kept across blocks: fresh multi-megabyte temporaries cost
            # page faults on every block.
            cells = len(block) * ka
            if cells > len(buffer):
                buffer = np.empty(cells, dtype=np.float32)
                maybe_buffer, unsure_buffer = np.empty(cells, bool), np.empty(cells, bool)
            scores = np.matmul(block, w_alive.T, out=buffer[:cells].reshape(len(block), ka))
            scores += b_alive
            maybe = maybe_buffer[:cells].reshape(scores.shape)
            unsure = unsure_buffer[:cells].reshape(scores.shape)
            if positive:  # right when the score is >= 0
                np.greater_equal(scores, lo, out=maybe)
                np.less_equal(scores, hi, out=unsure)
            else:
                np.less_equal(scores, hi, out=maybe)
                np.greater_equal(scores, lo, out=unsure)
            unsure &= maybe
            # int32 is enough for one block's rows, and twice as fast to sum into as int64
            possible[:ka] += maybe.view(np.uint8).sum(axis=0, dtype=np.int32)
            if unsure.any():  # rare: a full scan for them costs more than this check
                r, c = np.divmod(np.flatnonzero(unsure), ka)  # faster than a 2-d nonzero
                sure[:ka] -= np.bincount(c, minlength=ka)
                unsure_rows.append(rows[r])
                unsure_cands.append(alive[c])
            seen += counted
            if bar >= 0:
                keep = possible[:ka] + (self.n - seen) > bar
                if not keep.all():
                    kept = int(keep.sum())
                    alive, possible[:kept], sure[:kept] = (
                        alive[keep],
                        possible[:ka][keep],
                        sure[:ka][keep],
                    )
                    if kept == 0:
                        break
                    w_alive, b_alive = w32[alive], b32[alive]
        # sure holds minus the unsure count so far; the sure right answers are possible - unsure.
        sure[: len(alive)] += possible[: len(alive)]
        return alive, sure[: len(alive)], np.concatenate(unsure_rows), np.concatenate(unsure_cands)


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


def _linear_scores(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``X @ coef.T + intercept`` in float64, shape (n_samples, K), a block of rows at a time."""
    coef = np.asarray(coef, dtype=np.float64)
    out = np.empty((len(X), coef.shape[0]))
    for start in range(0, len(X), 4096):
        block = X[start : start + 4096].astype(np.float64)
        np.matmul(block, coef.T, out=out[start : start + 4096])
    out += intercept
    return out


def _class_index(scores: np.ndarray) -> np.ndarray:
    """Predicted class positions from scores (n, n_classes); two classes: ``s >= 0`` is class 1."""
    if scores.shape[1] == 2:  # [-s/2, s/2]: argmax would send s == 0 to class 0
        return (scores[:, 1] >= 0).astype(np.int64)
    return np.argmax(scores, axis=1)


def _two_column(score: np.ndarray) -> np.ndarray:
    """(n,) score -> (n, 2) scores ``[-s/2, s/2]``: their softmax is ``sigmoid(s)``."""
    half = 0.5 * score
    return np.column_stack([-half, half])


def _check_binary(classes: np.ndarray, what: str) -> None:
    if len(classes) != 2:
        raise SettingsError(
            f"{what} is a two-class model and the labels hold {len(classes)} classes; "
            "pick a binary task such as 'is-2' or '0-vs-1'"
        )


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SettingsError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value: object, *, positive: bool) -> float:
    number = (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else np.nan
    )
    if not np.isfinite(number) or (number <= 0 if positive else number < 0):
        need = "a positive" if positive else "a non-negative"
        raise SettingsError(f"{name} must be {need} finite number, got {value!r}")
    return number


def _pcg64_after(state: dict[str, Any], draws: int) -> np.random.PCG64:
    """A PCG64 in ``state``, advanced as if ``draws`` 64-bit numbers had been drawn."""
    generator = np.random.PCG64()
    generator.state = state  # type: ignore[assignment]  # a plain dict is what numpy takes
    return generator.advance(draws)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _make_rng(rng: object) -> np.random.Generator:
    try:
        return np.random.default_rng(rng)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"rng must be an int, a numpy Generator or None, got {rng!r}") from exc
