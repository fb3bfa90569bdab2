"""SGD (with momentum) and Adam for a flat dict of NumPy parameter arrays.

Parameters and gradients are ``dict[str, ndarray]`` with the same keys and
shapes; ``step`` updates the parameter arrays in place, so a model can hand
its own arrays over once and keep using them.
"""

from __future__ import annotations

import numpy as np

from digitlab.errors import SettingsError


class Optimizer:
    """Base class: holds the parameters it updates and the learning rate."""

    def __init__(self, params: dict[str, np.ndarray], *, lr: float) -> None:
        if not lr > 0:
            raise SettingsError(f"learning rate must be positive, got {lr}")
        self.params = params
        self.lr = float(lr)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update every parameter in place from its gradient."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    velocity = momentum * velocity - lr * grad;  param += velocity
    (with Nesterov: param += momentum * velocity - lr * grad), as scikit-learn's
    MLP does. ``momentum=0`` is plain SGD: param -= lr * grad.
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        *,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr=lr)
        if not 0.0 <= momentum < 1.0:
            raise SettingsError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()} if momentum else {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for name, param in self.params.items():
            grad = grads[name]
            if not self.momentum:
                param -= self.lr * grad
                continue
            velocity = self.velocity[name]
            velocity *= self.momentum
            velocity -= self.lr * grad
            if self.nesterov:
                param += self.momentum * velocity - self.lr * grad
            else:
                param += velocity


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction folded into the step size."""

    def __init__(
        self,
        params: dict[str, np.ndarray],
        *,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr=lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self._scratch: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        # lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t): the bias correction of both moments.
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)
        for name, param in self.params.items():
            grad = grads[name]
            m, v = self.m[name], self.v[name]
            # The arithmetic of ``param -= (lr_t * m / (sqrt(v) + eps)).astype(param.dtype)``
            # (the float64 lr_t makes the quotient float64), written into buffers kept
            # between steps: the same bits without six temporary arrays per parameter per
            # step. That saves only 3-10% of a step (784-100-10: 83-86 against 86-93 ms
            # an epoch, loaded machine); the float64 product and quotient are the rest,
            # and a float32 step (about 40% less) would change every Adam-trained weight.
            small, wide = self._buffers(name, param, lr_t)
            m *= self.beta1
            np.multiply(grad, 1.0 - self.beta1, out=small)
            m += small
            v *= self.beta2
            np.square(grad, out=small)
            small *= 1.0 - self.beta2
            v += small
            np.multiply(m, lr_t, out=wide)  # in lr_t's dtype (float64)
            np.sqrt(v, out=small)
            small += self.eps
            np.divide(wide, small, out=wide)
            np.copyto(small, wide, casting="same_kind")  # rounded to the parameter's dtype
            param -= small

    def _buffers(self, name: str, param: np.ndarray, lr_t: np.floating) -> tuple[np.ndarray, np.ndarray]:
        """Two scratch arrays shaped as ``param``: one in its dtype (the moments' maths),
        one in the step's dtype ``lr_t * m`` promotes to (float64 for float32 moments)."""
        buffers = self._scratch.get(name)
        wide_dtype = np.result_type(lr_t, self.m[name])
        if buffers is None or buffers[1].dtype != wide_dtype:
            buffers = (np.empty_like(self.m[name]), np.empty(param.shape, dtype=wide_dtype))
            self._scratch[name] = buffers
        return buffers


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(
    name: str, params: dict[str, np.ndarray], *, lr: float, momentum: float = 0.0
) -> Optimizer:
    """``"sgd"`` (with ``momentum``) or ``"adam"`` over ``params``."""
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return Adam(params, lr=lr)
    raise SettingsError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
