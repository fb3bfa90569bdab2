"""What every iteratively trained model shares: mini-batches, the epoch loop,
early stopping, a history of the learning curves and progress reports.

Models call :func:`run_epochs` with a function that trains one epoch and a
function that evaluates; the loop records the history, reports each epoch
through the progress callback, stops early the way scikit-learn does, and on
Ctrl-C stops cleanly with the best weights so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from digitlab.errors import SettingsError


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
