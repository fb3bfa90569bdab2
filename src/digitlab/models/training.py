"""What every iteratively trained model shares: mini-batches, the epoch loop,
early stopping, a history of the learning curves and progress reports.

Models call :func:`run_epochs` with a function that trains one epoch and a
function that evaluates; the loop records the history, reports each epoch
through the progress callback, stops early the way scikit-learn does, and on
Ctrl-C stops cleanly with the best weights so far.

Softmax and MLP share more: :class:`MinibatchTrained` is their whole training
loop (hold-out, class weights, shuffled mini-batches, the cosine schedule, the
optimiser, snapshot and rollback, the BLAS thread limit), so each model file
keeps only its maths: initial weights, forward, loss and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from digitlab.errors import SettingsError
from digitlab.models.base import class_weights
from digitlab.models.losses import target_matrix
from digitlab.models.optim import OPTIMIZERS, make_optimizer
from digitlab.models.settings import ClassWeight, Flag, Integer, Number, OneOf, Seed, Setting
from digitlab.splits import stratified_holdout

LR_SCHEDULES = ("constant", "cosine")
# The settings of the loop both models have, under the same names (their settings_spec).
MINIBATCH_SETTINGS: dict[str, Setting] = {
    "optimizer": OneOf(OPTIMIZERS),
    "lr": Number(0.0, closed="neither"),
    "momentum": Number(0.0, 1.0, closed="left"),
    "batch_size": Integer(1),
    "epochs": Integer(1),
    "alpha": Number(0.0),
    "lr_schedule": OneOf(LR_SCHEDULES),
    "tol": Number(0.0, none=True),
    "n_iter_no_change": Integer(1),
    "early_stopping": Flag(),
    "validation_fraction": Number(0.0, 1.0, closed="neither"),
    "class_weight": ClassWeight(),
    "random_state": Seed(),
}


@dataclass(frozen=True)
class Progress:
    """One progress report from ``fit``; the CLI renders it as a progress bar.

    Attributes
    ----------
    stage : str
        ``"epoch"`` after each epoch, ``"candidates"`` after each batch of
        guess-and-check candidates, ``"best"`` when a new best is found.
    step, total : int
        How far along (1-based) out of how many.
    logs : dict of str to float
        Figures so far: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` ...
    """

    stage: str
    step: int
    total: int
    logs: dict[str, float] = field(default_factory=dict)


Callback = Callable[[Progress], None]


def minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index arrays of a fresh random permutation of ``range(n)``, ``batch_size`` at a time.

    The last batch holds the remainder (it is not dropped), as in Keras.
    """
    if batch_size <= 0:
        raise SettingsError(f"batch size must be positive, got {batch_size}")
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


class EarlyStopping:
    """Stop when a monitored figure has not improved by ``tol`` for ``patience`` epochs.

    ``mode="min"`` for losses, ``"max"`` for accuracies. Mirrors scikit-learn's
    ``tol`` / ``n_iter_no_change``: an epoch counts as an improvement only if it
    beats the best so far by more than ``tol``.
    """

    def __init__(self, *, tol: float, patience: int, mode: str = "min") -> None:
        if patience < 1:
            raise SettingsError(f"n_iter_no_change must be at least 1, got {patience}")
        self.tol, self.patience, self.sign = tol, patience, (1.0 if mode == "min" else -1.0)
        self.best = np.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> tuple[bool, bool]:
        """Record ``value``; return ``(is_new_best, should_stop)``."""
        signed = self.sign * value
        improved = signed < self.best - self.tol
        is_best = signed < self.best
        if is_best:
            self.best, self.best_epoch = signed, epoch
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return is_best, self.bad_epochs >= self.patience


@dataclass
class EpochLoopResult:
    epochs_run: int
    stopped_early: bool
    interrupted: bool
    history: dict[str, list[float]]
    kept_epoch: int = 0  # the epoch whose weights the model ends with (0: none finished)


def run_epochs(
    *,
    epochs: int,
    train_epoch: Callable[[int], None],
    evaluate: Callable[[], dict[str, float]],
    monitor: str,
    mode: str = "min",
    tol: float = 1e-4,
    n_iter_no_change: int = 10,
    early_stopping: bool = True,
    snapshot: Callable[[], dict[str, np.ndarray]] | None = None,
    restore: Callable[[dict[str, np.ndarray]], None] | None = None,
    callback: Callback | None = None,
) -> EpochLoopResult:
    """Train for up to ``epochs`` epochs, recording ``evaluate()`` after each.

    Parameters
    ----------
    train_epoch : callable(epoch) -> None
        One pass over the training data.
    evaluate : callable() -> dict
        Figures after an epoch, e.g. ``{"loss": .., "accuracy": .., "val_loss": ..}``.
    monitor : str
        The key of ``evaluate()``'s result early stopping watches.
    early_stopping : bool
        Stop after ``n_iter_no_change`` epochs without a ``tol`` improvement.
    snapshot, restore : callables, optional
        Copy out and put back the weights. Pass them to end with the weights
        of the best monitored epoch (also after Ctrl-C); leave them out to end
        with the last epoch's weights, as a plain training loop does.
    """
    if epochs < 1:
        raise SettingsError(f"epochs must be at least 1, got {epochs}")
    stopper = EarlyStopping(tol=tol, patience=n_iter_no_change, mode=mode)
    history: dict[str, list[float]] = {}
    best_weights: dict[str, np.ndarray] | None = None
    stopped_early = interrupted = False
    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            train_epoch(epoch)
            logs = evaluate()
            for key, value in logs.items():
                history.setdefault(key, []).append(float(value))
            if not np.isfinite(logs[monitor]):
                # Diverged (a learning rate far too high): stop, keep the best so far.
                stopped_early = True
                break
            is_best, should_stop = stopper.update(logs[monitor], epoch)
            if is_best and snapshot is not None:
                best_weights = snapshot()
            if callback is not None:
                callback(Progress("epoch", epoch, epochs, dict(logs)))
            if early_stopping and should_stop:
                stopped_early = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finished = len(next(iter(history.values()), []))
    kept = finished
    if best_weights is not None and restore is not None:
        restore(best_weights)
        kept = stopper.best_epoch
    return EpochLoopResult(epoch, stopped_early, interrupted, history, kept)


# The model's maths, as the shared loop calls it: ``(X, Y, sample_weight, backward)`` ->
# ``(mean loss without the penalty, gradients by parameter name (None when not
# backward), predicted class positions (n,))``. ``backward=False`` measures only.
LossAndGrads = Callable[
    [np.ndarray, np.ndarray, "np.ndarray | None", bool],
    tuple[float, "dict[str, np.ndarray] | None", np.ndarray],
]

# Mini-batch products smaller than this (multiply-adds of the widest X_batch @ W) run on
# one BLAS thread: a (256, 784) @ (784, 10) product is over before a second thread is
# worth waking, and on a busy machine waiting for it made epochs up to 30x slower
# (measured: 0.2 ms against 8 ms a product on 2 cores).
SINGLE_THREAD_BELOW = 2**25


class MinibatchTrained:
    """The training loop Softmax and MLP share; the model brings only its maths.

    Reads the settings both models have under the same names; :meth:`_train`
    sets ``history_``, ``n_iter_``, ``kept_epoch_``, ``interrupted_`` and
    ``stopped_early_``.
    """

    optimizer: str
    lr: float
    momentum: float
    batch_size: int
    epochs: int
    lr_schedule: str
    tol: float | None
    n_iter_no_change: int
    early_stopping: bool
    validation_fraction: float
    class_weight: str | dict[int, float] | None
    random_state: int | np.random.Generator | None
    classes_: np.ndarray

    def _train(
        self,
        X: np.ndarray,
        y_index: np.ndarray,
        *,
        n_out: int,
        build: Callable[[int, np.random.Generator], tuple[dict[str, np.ndarray], LossAndGrads]],
        watch: str,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
        callback: Callback | None = None,
    ) -> None:
        """Train on ``X`` (n, d) with class positions ``y_index`` (n,) and ``n_out`` outputs.

        Parameters
        ----------
        build : callable(n_features, rng) -> (params, loss_and_grads)
            Draws the starting weights (after the hold-out, so seeds give the
            weights they always gave); the optimiser updates ``params`` in place.
        watch : {"loss", "accuracy"}
            What early stopping watches on the evaluation set (lower or higher is better).
        eval_set : (X_val, val_index), optional
            Checked features and class positions of the validation data.
        """
        rng = np.random.default_rng(self.random_state)
        # Per-class weights from the whole training set (None: unweighted).
        weights = class_weights(self.class_weight, self.classes_, y_index)

        def sample_weight(index: np.ndarray) -> np.ndarray | None:
            return None if weights is None else weights[index].astype(np.float32)

        # Evaluation sets by name: (features, targets, class positions, sample weights).
        # With early stopping an eval_set is the validation data watched (as Keras's
        # validation_data); without one, a share of X is held out for it. A loss early
        # stopping watches is weighted as the training loss is; one only reported is not.
        sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = {}
        if self.early_stopping and eval_set is None:
            train, held = stratified_holdout(y_index, self.validation_fraction, rng)
            held_index = y_index[held]
            sets["holdout"] = (X[held], target_matrix(held_index, n_out, np.float32),
                               held_index, sample_weight(held_index))
            X, y_index = X[train], y_index[train]
        if eval_set is not None:
            X_val, val_index = eval_set
            weighted = self.early_stopping and watch == "loss"
            sets["val"] = (X_val, target_matrix(val_index, n_out, np.float32), val_index,
                           sample_weight(val_index) if weighted else None)
        monitor = f"{'val' if eval_set is not None else 'holdout'}_{watch}"

        params, loss_and_grads = build(X.shape[1], rng)
        if self.epochs == 0:  # the network as initialised (the MLP's classic exercise)
            self.history_: dict[str, list[float]] = {}
            self.n_iter_ = self.kept_epoch_ = 0
            self.interrupted_ = self.stopped_early_ = False
            return
        optimizer = make_optimizer(self.optimizer, params, lr=float(self.lr),
                                   momentum=float(self.momentum))
        targets = target_matrix(y_index, n_out, np.float32)
        n, batch_size, lr = len(X), int(self.batch_size), float(self.lr)
        total_steps = math.ceil(n / batch_size) * int(self.epochs)
        step = 0
        epoch_logs: dict[str, float] = {}

        def train_epoch(epoch: int) -> None:
            nonlocal step
            loss_sum, correct = 0.0, 0
            for rows in minibatches(n, batch_size, rng):
                if self.lr_schedule == "cosine":
                    # Half a cosine from lr to 0, batch by batch: the last epochs
                    # average out the mini-batch noise instead of bouncing around.
                    optimizer.lr = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
                yb = y_index[rows]
                loss, grads, predicted = loss_and_grads(X[rows], targets[rows],
                                                        sample_weight(yb), True)
                assert grads is not None
                optimizer.step(grads)
                loss_sum += loss * len(rows)
                correct += int(np.count_nonzero(predicted == yb))
                step += 1
            epoch_logs["loss"], epoch_logs["accuracy"] = loss_sum / n, correct / n

        # Weights of the last epoch whose loss was finite: a learning rate far
        # too high can make them overflow, and the model should stay usable.
        last_finite = {name: value.copy() for name, value in params.items()}

        def evaluate() -> dict[str, float]:
            logs = dict(epoch_logs)
            for name, (X_eval, Y_eval, index, weight) in sets.items():
                loss, _, predicted = loss_and_grads(X_eval, Y_eval, weight, False)
                logs[f"{name}_loss"], logs[f"{name}_accuracy"] = loss, float(np.mean(predicted == index))
            if np.isfinite(logs["loss"]):
                for name, value in params.items():
                    np.copyto(last_finite[name], value)
            return logs

        def snapshot() -> dict[str, np.ndarray]:
            return {name: value.copy() for name, value in params.items()}

        def restore(saved: dict[str, np.ndarray]) -> None:
            for name, value in saved.items():
                np.copyto(params[name], value)

        # Products this small lose more to waking BLAS threads than they gain (badly
        # so on a busy machine): run them on one thread, as scikit-learn's KMeans
        # does. Overflow in a diverging run is detected from the loss.
        widest = max(value.size for value in params.values() if value.ndim == 2)
        small = batch_size * widest < SINGLE_THREAD_BELOW
        with threadpool_limits(limits=1 if small else None, user_api="blas"), \
                np.errstate(over="ignore", invalid="ignore", under="ignore"):
            result = run_epochs(
                epochs=int(self.epochs),
                train_epoch=train_epoch,
                evaluate=evaluate,
                monitor=monitor if self.early_stopping else "loss",
                mode="max" if self.early_stopping and watch == "accuracy" else "min",
                tol=0.0 if self.tol is None else float(self.tol),
                n_iter_no_change=int(self.n_iter_no_change),
                early_stopping=self.tol is not None,
                snapshot=snapshot if self.early_stopping else None,
                restore=restore if self.early_stopping else None,
                callback=callback,
            )
        if not all(np.all(np.isfinite(value)) for value in params.values()):
            restore(last_finite)
        # Ctrl-C before the first epoch ended leaves no figures, but the same keys.
        keys = ["loss", "accuracy"] + [f"{name}_{m}" for name in sets for m in ("loss", "accuracy")]
        self.history_ = {key: result.history.get(key, []) for key in keys}
        self.n_iter_ = result.epochs_run
        self.kept_epoch_ = result.kept_epoch
        self.interrupted_ = result.interrupted
        self.stopped_early_ = result.stopped_early
