"""The exercises' formulas as pure functions, for learners to call and compare.

Each takes arrays and returns a new array (or a number); none ever writes into
its arguments, so calling one with its arguments swapped gives a wrong
*answer*, never a silently zeroed input. (The training code has its own
in-place versions, e.g. ``models.losses.sigmoid_backward(dout, a)``, which
overwrite ``dout`` for speed; these are the ones to read and to check against.)

>>> import numpy as np
>>> from digitlab.maths import sigmoid, sigmoid_derivative, one_hot, squared_distance_cost
>>> float(sigmoid(0.0)), float(sigmoid_derivative(0.0))
(0.5, 0.25)
>>> one_hot([2, 0], n_classes=3)
array([[0., 0., 1.],
       [1., 0., 0.]])
>>> squared_distance_cost(np.array([[0.5, 0.5, 0.0]]), [0])
0.5
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from digitlab.models import losses

__all__ = ["one_hot", "sigmoid", "sigmoid_derivative", "squared_distance_cost"]


def _floats(z: ArrayLike) -> np.ndarray:
    """``z`` as a float array (float32 stays float32, anything else float64), a copy."""
    array = np.asarray(z)
    dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float64
    return np.array(array, dtype=dtype, copy=True)


def sigmoid(z: ArrayLike) -> np.ndarray:
    """The logistic function 1 / (1 + e^-z), element-wise; a new array of ``z``'s shape.

    Computed as SciPy's ``expit``, which neither overflows nor warns for large
    negative ``z`` (the textbook ``1 / (1 + np.exp(-z))`` warns at z = -1000).
    """
    return expit(_floats(z))


def sigmoid_derivative(z: ArrayLike) -> np.ndarray:
    """d sigmoid / dz at ``z``: sigmoid(z) * (1 - sigmoid(z)), element-wise, a new array.

    Takes the *input* z, not the output a = sigmoid(z) (for an output a, the
    derivative is ``a * (1 - a)``). Largest, 0.25, at z = 0.
    """
    # 1 - sigmoid(z) is sigmoid(-z): written so, it keeps its precision for large z,
    # where 1 - s would cancel to a few digits (or to 0).
    z = _floats(z)
    return sigmoid(z) * sigmoid(-z)


def one_hot(labels: ArrayLike, n_classes: int | None = None) -> np.ndarray:
    """Labels (n,) of whole numbers 0..n_classes-1 -> float64 rows (n, n_classes),
    each all zeros but a 1 at its label.

    ``n_classes`` defaults to the largest label + 1 (10 for digits 0..9 only if
    a 9 is present: pass it when that matters).
    """
    values = np.asarray(labels)
    if values.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {values.shape}")
    if values.size and not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError("labels must be whole numbers (a class position each)")
    positions = values.astype(np.int64)
    if positions.size and positions.min() < 0:
        raise ValueError(f"labels must be 0 or more, got {int(positions.min())}")
    count = int(positions.max()) + 1 if n_classes is None and positions.size else int(n_classes or 0)
    if positions.size and positions.max() >= count:
        raise ValueError(f"label {int(positions.max())} does not fit in {count} classes")
    return losses.one_hot(positions, count)


def squared_distance_cost(outputs: ArrayLike, targets: ArrayLike) -> float:
    """The classic cost of a network (3Blue1Brown, Nielsen): for each image, the sum
    over the outputs of (output - target)^2; then the mean over the images.

    Parameters
    ----------
    outputs : array of shape (n_images, n_outputs)
        The network's output activations (e.g. ``model.predict_proba(X)``).
    targets : array of shape (n_images, n_outputs), or labels of shape (n_images,)
        What the outputs should have been: one-hot rows, or the labels
        0..n_outputs-1 (turned into one-hot rows by :func:`one_hot`).

    Returns
    -------
    float
        ``mean_i sum_k (outputs[i, k] - targets[i, k])^2``. Not divided by the
        number of outputs, nor halved (Nielsen's C = 1/2n sum ||y - a||^2 is half of it).
    """
    a = np.asarray(outputs, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"outputs must be (n_images, n_outputs), got shape {a.shape}")
    y = np.asarray(targets)
    if y.ndim == 1:
        y = one_hot(y, a.shape[1])
    if y.shape != a.shape:
        raise ValueError(f"targets of shape {y.shape} do not match outputs of shape {a.shape}")
    return float(np.mean(np.sum((a - y) ** 2, axis=1)))
