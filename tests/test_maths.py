"""digitlab.maths: the exercises' formulas, pure, and against the textbook lines."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import digitlab
from digitlab import maths, metrics

finite = st.floats(-30, 30, allow_nan=False, width=64)


@given(arrays(np.float64, st.integers(1, 20), elements=finite))
def test_sigmoid_and_its_derivative_match_the_textbook_and_leave_z_alone(z) -> None:
    before = z.copy()
    s = maths.sigmoid(z)
    ds = maths.sigmoid_derivative(z)
    np.testing.assert_array_equal(z, before)  # never written into
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(ds, np.exp(-z) / (1 + np.exp(-z)) ** 2, rtol=1e-9, atol=1e-300)
    assert s is not z
    assert ds is not z


def test_sigmoid_derivative_is_the_slope_of_sigmoid() -> None:
    z = np.linspace(-6, 6, 25)
    h = 1e-6
    numeric = (maths.sigmoid(z + h) - maths.sigmoid(z - h)) / (2 * h)
    np.testing.assert_allclose(maths.sigmoid_derivative(z), numeric, rtol=1e-6)
    assert float(maths.sigmoid_derivative(0.0)) == 0.25


def test_sigmoid_keeps_float32_and_takes_lists_and_huge_values() -> None:
    assert maths.sigmoid(np.zeros(3, np.float32)).dtype == np.float32
    assert maths.sigmoid([0, 1]).dtype == np.float64
    np.testing.assert_array_equal(maths.sigmoid([-1000.0, 1000.0]), [0.0, 1.0])  # no overflow warning


def test_one_hot() -> None:
    labels = np.array([3, 0, 9])
    before = labels.copy()
    Y = maths.one_hot(labels, 10)
    np.testing.assert_array_equal(labels, before)
    assert Y.shape == (3, 10)
    assert Y.dtype == np.float64
    np.testing.assert_array_equal(Y.argmax(axis=1), labels)
    np.testing.assert_array_equal(Y.sum(axis=1), 1.0)
    assert maths.one_hot([0, 2]).shape == (2, 3)  # the largest label + 1
    for bad, n in [([10], 10), ([-1], 3), ([0.5], 3), ([[0]], 3)]:
        with pytest.raises(ValueError, match=r"labels must|does not fit"):
            maths.one_hot(bad, n)


@given(st.integers(1, 12), st.integers(2, 10), st.integers(0, 2**31))
def test_squared_distance_cost_is_the_mean_of_the_per_image_sums(n, k, seed) -> None:
    rng = np.random.default_rng(seed)
    outputs, labels = rng.random((n, k)), rng.integers(0, k, n)
    kept_outputs, kept_labels = outputs.copy(), labels.copy()
    per_image = [sum((outputs[i, j] - (j == labels[i])) ** 2 for j in range(k)) for i in range(n)]
    cost = maths.squared_distance_cost(outputs, labels)
    assert cost == pytest.approx(sum(per_image) / n, rel=1e-12)
    assert maths.squared_distance_cost(outputs, maths.one_hot(labels, k)) == cost  # one-hot targets
    assert metrics.squared_distance_cost(outputs, labels) == cost  # one formula, one place
    np.testing.assert_array_equal(outputs, kept_outputs)
    np.testing.assert_array_equal(labels, kept_labels)


def test_squared_distance_cost_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        maths.squared_distance_cost(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="n_outputs"):
        maths.squared_distance_cost(np.zeros(3), [0, 1, 2])


def test_import_digitlab_reaches_the_toolkit_lazily() -> None:
    for name in ("plots", "analysis", "inspection", "inspect_model", "io", "maths", "load_model",
                 "show_digits", "show_predictions"):
        assert name in digitlab.__all__
        assert name in dir(digitlab)
        assert getattr(digitlab, name) is not None
        assert name in (digitlab.__doc__ or "")
    assert digitlab.inspect_model is digitlab.inspection.inspect_model
    code = ("import sys, digitlab; print([m for m in ('torch', 'sklearn', 'matplotlib') "
            "if m in sys.modules]); digitlab.plots; print('matplotlib' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert lines == ["[]", "True"]
