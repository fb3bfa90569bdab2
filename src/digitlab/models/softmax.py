"""Softmax (multinomial logistic) regression, and binary logistic regression.

One linear layer, ``Z = X @ W + b``, trained on mini-batches with SGD
(momentum) or Adam to minimise the mean cross-entropy plus an L2 penalty::

    objective = mean_i CE(z_i, y_i) + alpha / 2 * ||W||^2      (b is not penalised)

With ten classes ``W`` has one column per class and CE is the softmax
cross-entropy; with two classes ``W`` has a single column and CE is the
sigmoid (binary) cross-entropy, which is the same model with half the
parameters. ``alpha`` is scikit-learn's ``SGDClassifier`` L2 strength; the
same optimum as ``LogisticRegression(C=...)`` on ``n`` samples is reached with
``alpha = 1 / (C * n)``.

The loss is convex, so weights start at zero by default and any optimiser
that converges reaches the same answer; the settings only change how fast.

Forward and backward are split in the numpy-ml style: :func:`loss_and_grads`
returns the gradients in a dict beside the parameters, and the softmax (or
sigmoid) and the cross-entropy use their fused gradient ``(P - Y) / n``
instead of the softmax Jacobian. The loss functions are the ones the MLP
uses, from :mod:`digitlab.models.losses`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.utils.validation import check_is_fitted

from digitlab.models.base import ArraySpec, DigitClassifier, linear_scores
from digitlab.models.losses import sigmoid_cross_entropy, softmax_cross_entropy
from digitlab.models.settings import OneOf, SettingsSpec
from digitlab.models.training import MINIBATCH_SETTINGS, Callback, LossAndGrads, MinibatchTrained

INITS = ("zeros", "normal")


# ---------------------------------------------------------------------------- the layer


def forward(params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Scores ``Z = X @ W + b``: (n, d) @ (d, k) + (k,) -> (n, k)."""
    return X @ params["coef_"] + params["intercept_"]


def loss_and_grads(
    params: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    *,
    alpha: float = 0.0,
    sample_weight: np.ndarray | None = None,
    backward: bool = True,
) -> tuple[float, dict[str, np.ndarray] | None, np.ndarray]:
    """One forward and (unless ``backward=False``) backward pass over a batch.

    Parameters
    ----------
    params : dict with ``coef_`` (d, k) and ``intercept_`` (k,)
        ``k == 1`` is binary logistic regression (sigmoid output, class 1 is
        positive); ``k >= 2`` is softmax regression.
    X : ndarray of shape (n, d)
    Y : ndarray of shape (n, k)
        Targets, ``target_matrix(y_index, k, dtype)``: one-hot rows, or one 0/1
        column when ``k == 1``.
    alpha : float
        L2 strength: the gradient is that of ``CE + alpha / 2 * ||W||^2``.
    sample_weight : ndarray of shape (n,), optional
        Multiplies each sample's cross-entropy (class weights).

    Returns
    -------
    loss : float
        Mean (weighted) cross-entropy of the batch (without the penalty).
    grads : dict of ndarray, or None when not ``backward``
        Same keys and shapes as ``params``.
    predicted : ndarray of shape (n,)
        The class positions the weights before this step predict, for the
        caller's running accuracy.
    """
    W = params["coef_"]
    Z = forward(params, X)  # (n, k)
    predicted = _predicted_index(Z)
    loss_fn = sigmoid_cross_entropy if W.shape[1] == 1 else softmax_cross_entropy
    # Both losses overwrite Z with dL/dZ = (P - Y) / n: Z is not needed again.
    loss, dZ = loss_fn(Z, Y, overwrite=True, sample_weight=sample_weight)
    if not backward:
        return loss, None, predicted
    dW = X.T @ dZ  # (d, n) @ (n, k) -> (d, k)
    if alpha:
        dW += W.dtype.type(alpha) * W
    return loss, {"coef_": dW, "intercept_": dZ.sum(axis=0)}, predicted


def _predicted_index(Z: np.ndarray) -> np.ndarray:
    """Class positions from scores: ``z >= 0`` for one sigmoid output, else argmax."""
    if Z.shape[1] == 1:
        return (Z[:, 0] >= 0).astype(np.int64)
    return np.argmax(Z, axis=1)


# ---------------------------------------------------------------------------- the estimator


class Softmax(MinibatchTrained, DigitClassifier):
    """Softmax regression (binary logistic regression for two classes), mini-batch trained.

    Parameters
    ----------
    optimizer : {"adam", "sgd"}
        Adam, or SGD with ``momentum``.
    lr : float
        Learning rate (the peak rate with ``lr_schedule="cosine"``).
    batch_size : int
        Samples per update; the last batch of an epoch holds the remainder.
    epochs : int
        Most passes over the training data.
    momentum : float
        SGD momentum in [0, 1); unused by Adam.
    alpha : float
        L2 penalty ``alpha / 2 * ||W||^2`` (intercepts are not penalised).
        ``LogisticRegression(C=C)`` on ``n`` samples is ``alpha = 1 / (C * n)``.
    lr_schedule : {"constant", "cosine"}
        ``"cosine"`` lowers the rate along half a cosine from ``lr`` to 0 over
        ``epochs`` epochs, batch by batch, so the last epochs average out the
        mini-batch noise instead of bouncing around the optimum.
    init : {"zeros", "normal"}
        Starting weights: zeros (the loss is convex, so nothing is gained by
        random ones) or N(0, 0.01^2).
    tol : float or None
        An epoch improves on the best monitored loss only if it beats it by
        more than ``tol``; ``None`` always runs ``epochs`` epochs.
    n_iter_no_change : int
        Stop after this many epochs without improvement.
    early_stopping : bool
        ``False``: monitor the training loss and keep the last weights, as
        scikit-learn's MLP does. ``True``: monitor the loss on ``fit``'s
        ``eval_set`` (``digitlab train`` passes its validation split) or, without
        one, on ``validation_fraction`` of the training data held out
        (stratified), and end with the weights of its best epoch.
    validation_fraction : float
        Share of the training data held out when ``early_stopping`` and no ``eval_set``.
    class_weight : None, "balanced" or dict of label to float
        Multiplies each sample's loss by its class's weight (scikit-learn's
        ``class_weight``): ``"balanced"`` weighs class ``c`` by ``n_samples /
        (n_classes * count_c)``, so a rare class counts as much as a common
        one; a dict gives weights by label (1 for labels it leaves out). The
        training loss and the loss early stopping watches are weighted; a
        ``val_loss`` only reported is not.
    random_state : int, numpy Generator or None
        Seeds the shuffling, the hold-out and a ``"normal"`` start; an int
        gives identical weights on every fit.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features, n_classes), or (n_features, 1) for two classes
        Weights; column ``c`` is the "template" class ``c`` is scored with.
        With two classes the single column scores ``classes_[1]``.
    intercept_ : ndarray of shape (n_classes,), or (1,) for two classes
    classes_ : ndarray of shape (n_classes,)
    history_ : dict of str to list of float
        Per epoch: ``loss`` and ``accuracy`` (running means over the epoch's
        mini-batches, as Keras reports them; the loss is the cross-entropy
        without the penalty), ``holdout_loss`` / ``holdout_accuracy`` with
        ``early_stopping``, and ``val_loss`` / ``val_accuracy`` for an
        ``eval_set`` (measured after the epoch).
    n_iter_ : int
        Epochs run.
    kept_epoch_ : int
        The epoch whose weights the model holds (the best monitored one when
        it ends with the best weights, else the last).
    interrupted_ : bool
        True when Ctrl-C (KeyboardInterrupt) ended training; the model is
        still fitted and usable.
    stopped_early_ : bool
        Training stopped before ``epochs`` (no improvement, or diverged).

    Notes
    -----
    The training loop is :class:`digitlab.models.training.MinibatchTrained`,
    shared with ``MLP``. While ``fit`` trains on mini-batches of fewer than
    ``SINGLE_THREAD_BELOW / (n_features * n_outputs)`` samples (see
    :mod:`digitlab.models.training`), BLAS runs on one thread in this process
    (threadpoolctl, as scikit-learn's KMeans does): products that small lose
    more to waking threads than they gain. A run whose loss overflows (a
    learning rate far too high) ends with the last finite weights.
    """

    kind: ClassVar[str] = "softmax"
    min_classes: ClassVar[int] = 2
    settings_spec: ClassVar[SettingsSpec] = {**MINIBATCH_SETTINGS, "init": OneOf(INITS)}
    _state_names: ClassVar[tuple[str, ...]] = ("coef_", "intercept_")

    def __init__(
        self,
        *,
        optimizer: str = "adam",
        lr: float = 0.001,
        batch_size: int = 64,
        epochs: int = 30,
        momentum: float = 0.9,
        alpha: float = 1e-4,
        lr_schedule: str = "constant",
        init: str = "zeros",
        tol: float | None = 1e-4,
        n_iter_no_change: int = 5,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        class_weight: str | dict[int, float] | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.momentum = momentum
        self.alpha = alpha
        self.lr_schedule = lr_schedule
        self.init = init
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        callback: Callback | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Softmax:
        """Fit to ``X`` of shape (n_samples, n_features) and labels ``y`` of shape (n_samples,).

        Parameters
        ----------
        callback : callable(Progress), optional
            Called after every epoch with the epoch's figures.
        eval_set : (X_val, y_val), optional
            Validation data, evaluated after every epoch into ``val_loss`` /
            ``val_accuracy``; with ``early_stopping`` its loss is watched.
        """
        # The base class checks the settings, X and y, encodes the labels, then calls _fit.
        self._checked_fit(X, y, callback=callback, eval_set=eval_set)
        return self

    def _fit(
        self,
        X: np.ndarray,
        y_index: np.ndarray,
        *,
        callback: Callback | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        n_classes = len(self.classes_)
        n_out = 1 if n_classes == 2 else n_classes
        alpha = float(self.alpha)

        def build(n_features: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], LossAndGrads]:
            if self.init == "normal":
                W = rng.normal(0.0, 0.01, size=(n_features, n_out)).astype(np.float32)
            else:
                W = np.zeros((n_features, n_out), dtype=np.float32)
            # The optimiser updates these arrays in place, so coef_ is current after
            # every step (a callback may look at it) and on Ctrl-C.
            self.coef_, self.intercept_ = W, np.zeros(n_out, dtype=np.float32)
            params = {"coef_": self.coef_, "intercept_": self.intercept_}

            def step(X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None,
                     backward: bool) -> tuple[float, dict[str, np.ndarray] | None, np.ndarray]:
                return loss_and_grads(params, X, Y, alpha=alpha, sample_weight=sample_weight,
                                      backward=backward)

            return params, step

        self._train(X, y_index, n_out=n_out, build=build, watch="loss", callback=callback,
                    eval_set=eval_set)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        Z = linear_scores(X, self.coef_.T, self.intercept_)  # float64: batch-independent
        if Z.shape[1] == 1:
            # softmax([0, z]) = [1 - s(z), s(z)]: the base class's predict_proba
            # then gives exactly the sigmoid probabilities.
            return np.hstack([np.zeros_like(Z), Z])
        return Z

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        n_out = 1 if n_classes == 2 else n_classes  # one sigmoid column for two classes
        return {"coef_": ArraySpec((n_features, n_out)), "intercept_": ArraySpec((n_out,))}

    def linear_weights(self) -> np.ndarray:
        """Pixel weights, ``coef_.T``: (n_classes, n_features), or (1, n_features) for two classes.

        With two classes the one row scores ``classes_[1]`` against ``classes_[0]``.
        """
        check_is_fitted(self, "coef_")
        return np.asarray(self.coef_).T
