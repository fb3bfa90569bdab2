"""The optimisers: Adam's buffered step is the textbook formula, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.models.optim import Adam


def reference_adam(params, grads_per_step, *, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam as one line per moment, with fresh temporaries (the code before the buffers)."""
    params = {name: value.copy() for name, value in params.items()}
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        lr_t = lr * np.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        for name, param in params.items():
            m[name] *= beta1
            m[name] += (1.0 - beta1) * grads[name]
            v[name] *= beta2
            v[name] += (1.0 - beta2) * np.square(grads[name])
            param -= (lr_t * m[name] / (np.sqrt(v[name]) + eps)).astype(param.dtype, copy=False)
    return params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_step_equals_the_formula_bit_for_bit(dtype) -> None:
    rng = np.random.default_rng(0)
    start = {"W1": rng.standard_normal((30, 7)).astype(dtype), "b1": rng.standard_normal(7).astype(dtype)}
    steps = [{name: (rng.standard_normal(value.shape) * 10.0 ** rng.integers(-6, 2)).astype(dtype)
              for name, value in start.items()} for _ in range(25)]
    params = {name: value.copy() for name, value in start.items()}
    adam = Adam(params, lr=0.003)
    for grads in steps:
        adam.step(grads)
    expected = reference_adam(start, steps, lr=0.003)
    for name in start:
        assert params[name].dtype == dtype
        np.testing.assert_array_equal(params[name], expected[name])
    assert not np.array_equal(params["W1"], start["W1"])  # it did move


def test_adam_rate_change_between_steps_takes_effect() -> None:
    """A schedule sets ``lr`` between steps; the kept buffers must not keep the old rate."""
    rng = np.random.default_rng(1)
    start = {"W1": rng.standard_normal((5, 3)).astype(np.float32)}
    grads = [{"W1": rng.standard_normal((5, 3)).astype(np.float32)} for _ in range(2)]
    params = {"W1": start["W1"].copy()}
    adam = Adam(params, lr=0.01)
    adam.step(grads[0])
    after_one = params["W1"].copy()
    adam.lr = 0.0
    adam.step(grads[1])
    np.testing.assert_array_equal(params["W1"], after_one)  # a zero rate moves nothing
