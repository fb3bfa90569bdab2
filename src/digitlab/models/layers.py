"""Building blocks of the from-scratch MLP: activations, dropout, a dense layer, the network.

numpy-ml style: every block has ``forward`` and ``backward(dout) -> dX``;
the parameters live in one flat dict (``"W1"``, ``"b1"``, ``"W2"`` ...) and
their gradients in a second dict with the same keys and shapes, which is what
:mod:`digitlab.models.optim` updates.

Every block computes in the dtype of its parameters: float32 when training
(fast), float64 for gradient checks and for weights taken from scikit-learn.
To save memory traffic, activations work in place on the pre-activation they
are given and keep their *output* for ``backward``: each derivative used here
can be written with the output alone (sigmoid: a(1 - a), tanh: 1 - a^2,
ReLU: [a > 0]).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import expit

from digitlab.models.losses import Loss, sigmoid_backward


class Activation:
    """An element-wise function; ``forward`` overwrites its input."""

    name: ClassVar[str] = "identity"

    def __init__(self) -> None:
        self.out: np.ndarray | None = None

    def forward(self, z: np.ndarray) -> np.ndarray:
        """a = f(z), computed in place in ``z`` (which must not be needed again)."""
        self.out = z
        return z

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dz = dL/da * f'(z), computed in place in ``dout``."""
        return dout


class Identity(Activation):
    """f(z) = z (scikit-learn's ``activation="identity"``)."""


class Sigmoid(Activation):
    """f(z) = 1 / (1 + exp(-z)); f'(z) = f(z) (1 - f(z)).

    ``scipy.special.expit`` never overflows, so a saturated unit gives exactly
    0 or 1 instead of a warning.
    """

    name = "sigmoid"

    def forward(self, z: np.ndarray) -> np.ndarray:
        self.out = expit(z, out=z)
        return z

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.out is not None, "forward first"
        return sigmoid_backward(dout, self.out)


class Tanh(Activation):
    """f(z) = tanh(z); f'(z) = 1 - f(z)^2."""

    name = "tanh"

    def forward(self, z: np.ndarray) -> np.ndarray:
        self.out = np.tanh(z, out=z)
        return z

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.out is not None, "forward first"
        a = self.out
        dout *= 1 - a * a
        return dout


class ReLU(Activation):
    """f(z) = max(z, 0); f'(z) = 1 where z > 0, else 0 (also at the kink z = 0)."""

    name = "relu"

    def forward(self, z: np.ndarray) -> np.ndarray:
        self.out = np.maximum(z, 0, out=z)
        return z

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.out is not None, "forward first"
        np.multiply(dout, self.out > 0, out=dout)
        return dout


ACTIVATIONS: dict[str, type[Activation]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "identity": Identity,
}


class Dropout:
    """Inverted dropout: while training, zero each unit with probability ``p`` and
    scale the survivors by 1 / (1 - p), so nothing changes at prediction time.

    ``backward`` multiplies by the same mask (dropped units pass no gradient).
    """

    def __init__(self, p: float, rng: np.random.Generator | None) -> None:
        self.p, self.rng = float(p), rng
        self.mask: np.ndarray | None = None

    def forward(self, a: np.ndarray, *, train: bool) -> np.ndarray:
        if not train or self.p == 0.0:
            self.mask = None
            return a
        if self.rng is None:
            raise ValueError("dropout while training needs a random generator")
        keep = self.rng.random(a.shape, dtype=a.dtype) >= self.p
        self.mask = keep.astype(a.dtype)
        self.mask *= 1.0 / (1.0 - self.p)
        return a * self.mask  # a new array: the activation keeps its own output for backward

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.mask is not None:
            dout *= self.mask
        return dout


class Dense:
    """z = X @ W + b for the parameters named ``W{i}``, ``b{i}`` in the shared dicts.

    Shapes: X (n, n_in) @ W (n_in, n_out) + b (n_out,) -> z (n, n_out).
    """

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], index: int) -> None:
        self.params, self.grads = params, grads
        self.w, self.b = f"W{index}", f"b{index}"
        self.X: np.ndarray | None = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        self.X = X  # kept for dW = X.T @ dout
        z = X @ self.params[self.w]
        z += self.params[self.b]
        return z

    def backward(self, dout: np.ndarray, *, need_dX: bool = True) -> np.ndarray | None:
        """Fill dW (n_in, n_out) and db (n_out,); return dX (n, n_in) unless not needed.

        The first layer's dX is never needed (nobody learns the pixels), and it
        is the largest product of all, (n, n_out) @ (n_out, 784): skip it.
        """
        assert self.X is not None, "forward first"
        np.matmul(self.X.T, dout, out=self.grads[self.w])
        np.sum(dout, axis=0, out=self.grads[self.b])
        return dout @ self.params[self.w].T if need_dX else None


class Network:
    """Dense layers with the same activation between them; no output activation.

    ``forward`` returns the raw output z (the logits); the output activation
    (softmax or sigmoid) is fused into the loss, which returns dL/dz directly.

    Parameters
    ----------
    params : dict of str to ndarray
        ``W1`` (n_features, h1), ``b1`` (h1,), ..., ``WL`` (h_{L-1}, n_out), ``bL`` (n_out,).
        Used (and later updated by the optimiser) in place, not copied.
    activation : str
        Hidden activation, a key of :data:`ACTIVATIONS`.
    dropout : float
        Dropout probability after each hidden activation while training.
    rng : Generator, optional
        Draws the dropout masks.
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        activation: str,
        *,
        dropout: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.params = params
        self.n_layers = n_layers(params)
        self.grads = {name: np.zeros_like(value) for name, value in params.items()}
        self.dense = [Dense(params, self.grads, i) for i in range(1, self.n_layers + 1)]
        self.activations = [ACTIVATIONS[activation]() for _ in range(self.n_layers - 1)]
        self.dropouts = [Dropout(dropout, rng) for _ in range(self.n_layers - 1)]

    def forward(self, X: np.ndarray, *, train: bool = False) -> np.ndarray:
        """X (n, n_features) -> z (n, n_out); keeps what ``backward`` needs.

        ``train`` switches dropout on.
        """
        a = X
        for dense, activation, dropout in zip(self.dense[:-1], self.activations, self.dropouts,
                                              strict=True):
            a = dropout.forward(activation.forward(dense.forward(a)), train=train)  # (n, h_i)
        return self.dense[-1].forward(a)

    def backward(self, dz: np.ndarray) -> None:
        """From dL/dz of the output (n, n_out), fill ``self.grads`` (dz is overwritten)."""
        for i in range(self.n_layers - 1, -1, -1):
            da = self.dense[i].backward(dz, need_dX=i > 0)
            if da is not None:
                da = self.dropouts[i - 1].backward(da)
                dz = self.activations[i - 1].backward(da)  # (n, h_i)

    def loss_and_grads(
        self, X: np.ndarray, Y: np.ndarray, loss: Loss, alpha: float = 0.0, *,
        backward: bool = True, train: bool | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """One forward and (unless ``backward=False``) backward pass; fills ``self.grads``.

        Dropout is on when ``train`` (default: when ``backward``). ``sample_weight``
        (n,) multiplies each sample's loss (see :mod:`digitlab.models.losses`).

        The gradients are those of ``loss(z, Y) + alpha / 2 * sum of every
        squared weight`` (biases are not penalised: each weight gradient gains
        ``alpha * W``). Returns ``loss(z, Y)`` without the penalty (what the
        learning curves show) and the predicted
        output index of each row (n,), read off the logits before the loss
        overwrites them: argmax, or z > 0 for a single sigmoid unit.
        """
        z = self.forward(X, train=backward if train is None else train)  # (n, n_out)
        predicted = (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)
        value, dz = loss.value_and_grad(z, Y, sample_weight)
        if backward:
            self.backward(dz)
            if alpha:
                for i in range(1, self.n_layers + 1):
                    W = self.params[f"W{i}"]
                    self.grads[f"W{i}"] += W.dtype.type(alpha) * W
        return value, predicted


def n_layers(params: dict[str, np.ndarray]) -> int:
    """How many dense layers a flat parameter dict holds (checked: W1, b1, ... WL, bL)."""
    count = sum(1 for name in params if name.startswith("W"))
    expected = {f"{p}{i}" for i in range(1, count + 1) for p in "Wb"}
    if count == 0 or set(params) != expected:
        raise ValueError(f"parameters must be named W1, b1, ..., WL, bL; got {sorted(params)}")
    for i in range(1, count + 1):
        W, b = params[f"W{i}"], params[f"b{i}"]
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(f"layer {i}: W{i} {W.shape} and b{i} {b.shape} do not fit together")
        if i > 1 and params[f"W{i - 1}"].shape[1] != W.shape[0]:
            raise ValueError(f"layer {i}: W{i} takes {W.shape[0]} inputs, layer {i - 1} gives "
                             f"{params[f'W{i - 1}'].shape[1]}")
    return count
