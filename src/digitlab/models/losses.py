"""Losses on the raw network output, fused with the output activation.

Every loss takes the logits ``z`` of shape (n, k) -- the last dense layer's
output before any softmax or sigmoid -- and a target matrix ``Y`` of the same
shape (one-hot rows for k classes; one 0/1 column for a binary task with a
single sigmoid unit), and returns ``(L, dL/dz)``. Fusing the output
activation into the loss gives the short, stable gradients ((P - Y) / n for
softmax + cross-entropy, (sigmoid(z) - Y) / n for sigmoid + binary
cross-entropy) and never takes the log of a rounded-off probability.

Definitions (a = the output activation applied to z, n samples, k outputs):

``cross-entropy`` (softmax output)
    L = -(1/n) sum_i sum_k Y_ik log softmax(z_i)_k;  dL/dz = (P - Y) / n.
``binary-cross-entropy`` (sigmoid output)
    L = -(1/n) sum_i sum_k [Y_ik log s_ik + (1 - Y_ik) log(1 - s_ik)], s = sigmoid(z)
    (summed over the k units, averaged over samples, as scikit-learn's MLP does);
    dL/dz = (s - Y) / n.
``squared-distance`` (softmax or sigmoid output)
    L = (1/n) sum_i ||a_i - Y_i||^2, the classic exercise's "total cost": the
    squared distance between the output and the one-hot vector, averaged over
    samples; dL/da = 2 (a - Y) / n, then through the output activation.
``sigmoid-distance`` (sigmoid output)
    The fastai lesson's ``mnist_loss``: ``torch.where(Y == 1, 1 - s, s).mean()``
    with s = sigmoid(z), i.e. L = (1/(n k)) sum_i sum_k |Y_ik - s_ik|, the mean
    over all n*k entries of the (absolute) distance between the sigmoid of the
    raw output and the 0/1 target; dL/dz = sign(s - Y) s (1 - s) / (n k).
    (The *squared* distance after a sigmoid is ``squared-distance`` with a
    sigmoid output.)

The helpers :func:`softmax_cross_entropy`, :func:`sigmoid_cross_entropy` and
:func:`target_matrix` are shared with the softmax-regression model.
:func:`softmax_cross_entropy` is digitlab's one hand-written softmax: it works
in place in the logits and takes the loss from the shifted logits on the way,
which ``scipy.special.softmax`` (used everywhere else) cannot; it computes
the same bits (shift by the row maximum, exp, divide by the row sum).

Sample weights (``class_weight``): every loss takes an optional
``sample_weight`` of shape (n,) that multiplies each sample's term, keeping
the 1/n (scikit-learn's convention: "balanced" class weights average 1 over
the training set, so the loss keeps its scale). Each row of dL/dz depends on
its own sample only, so the gradient is weighted by scaling its rows
(:func:`weight_rows`). ``sample_weight=None`` runs the unweighted code as is.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import expit, softmax


def weight_rows(grad: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
    """Scale row i of ``grad`` (n, k) by ``sample_weight[i]``, in place (nothing if None)."""
    if sample_weight is not None:
        grad *= np.asarray(sample_weight, dtype=grad.dtype)[:, None]
    return grad


def weighted_sum(row_terms: np.ndarray, sample_weight: np.ndarray) -> float:
    """sum_i sample_weight[i] * sum_k row_terms[i, k], in float64."""
    return float(np.dot(sample_weight, row_terms.sum(axis=1, dtype=np.float64)))


def softmax_cross_entropy(
    z: np.ndarray, Y: np.ndarray, *, overwrite: bool = False,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(z) against one-hot Y, and the fused gradient.

    Parameters
    ----------
    z : ndarray of shape (n, k)
        Logits. Overwritten by the gradient when ``overwrite`` (saves a copy).
    Y : ndarray of shape (n, k)
        Targets; each row sums to 1 (one-hot, or smoothed labels).
    sample_weight : ndarray of shape (n,), optional
        Multiplies each sample's term (and its row of the gradient).

    Returns
    -------
    loss : float
        -(1/n) sum_i w_i sum_k Y_ik log softmax(z_i)_k   (w_i = 1 without weights)
    dz : ndarray of shape (n, k)
        w_i (softmax(z) - Y) / n
    """
    n = len(z)
    P = z if overwrite else z.copy()
    P -= P.max(axis=1, keepdims=True)  # shifted logits: exp never overflows
    if sample_weight is None:
        target_logit = float(np.vdot(P, Y))  # sum_i sum_k Y_ik shifted_ik
    else:
        row_target = P * Y  # (n, k); its row sums are each sample's target logit
    np.exp(P, out=P)
    sums = P.sum(axis=1, keepdims=True)  # (n, 1)
    if sample_weight is None:
        loss = (float(np.log(sums).sum()) - target_logit) / n
    else:
        loss = (weighted_sum(np.log(sums), sample_weight)
                - weighted_sum(row_target, sample_weight)) / n
    P /= sums  # probabilities
    P -= Y
    P /= n
    return loss, weight_rows(P, sample_weight)


def sigmoid_cross_entropy(
    z: np.ndarray, Y: np.ndarray, *, overwrite: bool = False,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Binary cross-entropy of sigmoid(z) against 0/1 targets Y, and the fused gradient.

    Uses -[y log s + (1 - y) log(1 - s)] = softplus(z) - y z, which never takes
    the log of a probability rounded to 0 or 1.

    Returns
    -------
    loss : float
        (1/n) sum_i w_i sum_k [softplus(z_ik) - Y_ik z_ik]  (n = rows of z; w_i = 1
        without ``sample_weight``)
    dz : ndarray, same shape as z
        w_i (sigmoid(z) - Y) / n
    """
    n = len(z)
    if sample_weight is None:
        loss = (float(np.logaddexp(0, z).sum()) - float(np.vdot(z, Y))) / n
    else:
        loss = weighted_sum(np.logaddexp(0, z) - z * Y, sample_weight) / n
    s = z if overwrite else z.copy()
    expit(s, out=s)
    s -= Y
    s /= n
    return loss, weight_rows(s, sample_weight)


def sigmoid_backward(dout: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dL/dz = dL/da * a (1 - a) where a = sigmoid(z); in place in ``dout``.

    The one place the sigmoid derivative is written down (the hidden sigmoid
    layers use it too); the tests confirm it symbolically with SymPy.
    """
    dout *= a
    dout *= 1 - a
    return dout


def softmax_backward(dout: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dL/dz from dL/da through a = softmax(z): a * (dout - sum_k dout_k a_k), in place."""
    dot = np.einsum("ij,ij->i", dout, a)[:, None]  # (n, 1)
    dout -= dot
    dout *= a
    return dout


class Loss:
    """A loss on logits: ``value_and_grad(z, Y) -> (L, dL/dz)``; overwrites ``z``."""

    name: ClassVar[str] = ""
    #: the output activations this loss is defined for
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, output: str) -> None:
        self.output = output

    def value_and_grad(
        self, z: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        raise NotImplementedError


class CrossEntropy(Loss):
    name = "cross-entropy"
    outputs = ("softmax",)

    def value_and_grad(
        self, z: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        return softmax_cross_entropy(z, Y, overwrite=True, sample_weight=sample_weight)


class BinaryCrossEntropy(Loss):
    name = "binary-cross-entropy"
    outputs = ("sigmoid",)

    def value_and_grad(
        self, z: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        return sigmoid_cross_entropy(z, Y, overwrite=True, sample_weight=sample_weight)


class SquaredDistance(Loss):
    name = "squared-distance"
    outputs = ("softmax", "sigmoid")

    def value_and_grad(
        self, z: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        n = len(z)
        a = output_activation(z, self.output)  # (n, k), a new array
        diff = z  # reuse z's memory: z itself is no longer needed
        np.subtract(a, Y, out=diff)
        if sample_weight is None:
            loss = float(np.vdot(diff, diff)) / n
        else:
            loss = weighted_sum(diff * diff, sample_weight) / n
        diff *= 2.0 / n  # dL/da
        weight_rows(diff, sample_weight)  # row-wise, so weighting dL/da weights dL/dz
        if self.output == "softmax":
            return loss, softmax_backward(diff, a)
        return loss, sigmoid_backward(diff, a)


class SigmoidDistance(Loss):
    name = "sigmoid-distance"
    outputs = ("sigmoid",)

    def value_and_grad(
        self, z: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        size = z.size
        s = expit(z, out=z)
        diff = s - Y
        if sample_weight is None:
            loss = float(np.abs(diff).sum()) / size
        else:
            loss = weighted_sum(np.abs(diff), sample_weight) / size
        grad = np.sign(diff)  # d|s - y| / ds
        grad *= 1.0 / size
        weight_rows(grad, sample_weight)
        return loss, sigmoid_backward(grad, s)


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (CrossEntropy, BinaryCrossEntropy, SquaredDistance, SigmoidDistance)
}
OUTPUTS = ("softmax", "sigmoid")


def output_activation(z: np.ndarray, output: str) -> np.ndarray:
    """The network's output a from logits z (n, k): softmax rows or element-wise sigmoid."""
    if output == "softmax":
        return softmax(z, axis=1)
    return expit(z)


def one_hot(y_index: np.ndarray, n_classes: int, dtype: type | np.dtype = np.float64) -> np.ndarray:
    """Class positions (n,) -> one-hot rows (n, n_classes): row i has a 1 at ``y_index[i]``."""
    out: np.ndarray = np.zeros((len(y_index), n_classes), dtype=dtype)
    out[np.arange(len(y_index)), y_index] = 1
    return out


def target_matrix(y_index: np.ndarray, n_out: int, dtype: type | np.dtype) -> np.ndarray:
    """Class positions (n,) -> one-hot rows (n, n_out), or one 0/1 column (n, 1)
    when a single sigmoid unit scores the second class."""
    if n_out == 1:
        return (y_index == 1).astype(dtype)[:, None]
    return one_hot(y_index, n_out, dtype)
