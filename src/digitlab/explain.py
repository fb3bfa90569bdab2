"""Why did this model read this digit so: per-prediction attribution maps.

>>> maps = explain(model, X[:5])                 # doctest: +SKIP
>>> maps.shape                                   # (5, 28, 28): one signed map per image

Every map has the image's shape and is **signed**: a positive value means the
pixel's ink *supports* the class the model predicted (taking it away lowers
that class's probability), a negative one that it argues against it. Four
ways to compute one:

- :func:`occlusion` works for every model, through ``predict_proba`` only:
  blank a small patch, see how far the predicted class's probability falls.
- :func:`input_gradient` is exact backpropagation to the pixels, in NumPy,
  for :class:`~digitlab.models.Softmax` and :class:`~digitlab.models.MLP`.
- :func:`integrated_gradients` and :func:`saliency` use Captum (the ``torch``
  extra) for the :class:`~digitlab.models.cnn.CNN`.
- :func:`explain` picks, per model kind, the method the deletion test
  (:func:`deletion_curve`) ranks best; ``benchmarks/bench_explain.py``
  measures it.

The deletion test measures a map instead of eyeballing it: blank the k
pixels the map ranks highest and follow the probability of the predicted
class; a faithful map makes it fall much faster than blanking k random pixels.

Images come as features (n, h*w) float in [0, 1] (square images), as every
model takes them, or as (n, h, w). Attributions are for the model's own
probabilities (``predict_proba``), without a saved model's temperature: a
temperature rescales the scores but never changes which class wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import SettingsError
from digitlab.models import DigitClassifier

if TYPE_CHECKING:
    from digitlab.predict import Prediction
    from digitlab.reader import Reader

METHODS = ("auto", "occlusion", "gradient", "gradient-x-input", "integrated-gradients", "saliency")
GRADIENT_KINDS = ("softmax", "mlp")  # differentiable in NumPy: input_gradient
# What "auto" uses, chosen by the deletion test (benchmarks/bench_explain.py, README):
# gradient x input beats the plain gradient for softmax and the MLP because a gradient
# is large on background pixels too, and blanking a pixel that is already 0 does nothing.
AUTO_METHOD = {"softmax": "gradient-x-input", "mlp": "gradient-x-input", "cnn": "integrated-gradients"}
BLANK = 0.0  # the background: what a blanked pixel becomes
_ROWS = 8192  # occluded copies per predict_proba call: bounds memory to ~25 MB at 28x28
# A drop this small is rounding, not the patch: BLAS kernels may round the same row's
# product differently at another place in a batch (OpenBLAS's AVX-512 kernels moved an
# unchanged image's probability by 5.6e-17), and a pixel the model ignores must get 0.
_ROUNDING = 1e-12


# ---------------------------------------------------------------------------- shapes


def _as_images(X: Any) -> np.ndarray:
    """``X`` as float32 images (n, h, w): from (n, h, w), or (n, h*w) of square images."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 3:
        return X
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, h*w) or (n, h, w), got {X.shape}")
    side = math.isqrt(X.shape[1])
    if side * side != X.shape[1]:
        raise ValueError(f"{X.shape[1]} features are not a square image; pass X as (n, h, w)")
    return X.reshape(len(X), side, side)


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1)  # (n, h, w) -> (n, h*w)


def _proba(model: DigitClassifier, features: np.ndarray) -> np.ndarray:
    """predict_proba in blocks of rows, so a large batch of copies stays small in memory."""
    return np.concatenate([model.predict_proba(features[start : start + _ROWS])
                           for start in range(0, len(features), _ROWS)])


def predicted_index(model: DigitClassifier, X: Any) -> np.ndarray:
    """The position (in ``classes_``) of the class the model predicts for each image, (n,)."""
    return np.argmax(model.predict_proba(_flat(_as_images(X))), axis=1)


# ---------------------------------------------------------------------------- occlusion


def patch_for(side: int) -> tuple[int, int]:
    """Default (patch, stride) for images of ``side`` pixels: a 4x4 patch at stride 2 on
    28x28 (about a stroke's width), scaled: 3 at stride 1 on 20x20, 1 at stride 1 on 8x8."""
    patch = max(1, round(side / 7))
    return patch, max(1, patch // 2)


def _starts(side: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, max(side - patch, 0) + 1, stride))
    if starts[-1] + patch < side:  # the last patch reaches the edge: every pixel is covered
        starts.append(side - patch)
    return starts


def occlusion(
    model: DigitClassifier, X: Any, *, patch: int | None = None, stride: int | None = None,
) -> np.ndarray:
    """Occlusion maps: how much blanking each patch lowers the predicted class's probability.

    For every image, each ``patch`` x ``patch`` square (top-left corners every
    ``stride`` pixels, the last one flush with the edge) is set to 0, the
    background, and the drop ``p(original) - p(occluded)`` of the predicted
    class's probability is shared by the square's pixels; a pixel's value is
    the mean drop over the squares that cover it (as Captum's ``Occlusion``).
    All occluded copies of all images go through ``predict_proba`` in a few
    large batches, so it works -- and is fast -- for every model kind.

    Parameters
    ----------
    model : DigitClassifier
        Fitted; only ``predict_proba`` is used.
    X : ndarray of shape (n, h*w) or (n, h, w)
        Pixels in [0, 1], light ink on dark.
    patch, stride : int, optional
        Square side and step; default :func:`patch_for` the image size.

    Returns
    -------
    ndarray of shape (n, h, w), float64
        Positive: the patch's ink supports the predicted class. A pixel the
        model ignores (and whose neighbours it ignores) gets 0.
    """
    images = _as_images(X)
    n, height, width = images.shape
    default_patch, default_stride = patch_for(min(height, width))
    patch, stride = patch or default_patch, stride or default_stride
    if patch < 1 or stride < 1:
        raise SettingsError(f"patch and stride must be at least 1, got {patch} and {stride}")
    corners = [(top, left) for top in _starts(height, min(patch, height), stride)
               for left in _starts(width, min(patch, width), stride)]
    coverage = np.zeros((height, width))
    for top, left in corners:
        coverage[top : top + patch, left : left + patch] += 1
    proba = model.predict_proba(_flat(images))  # (n, classes)
    target = np.argmax(proba, axis=1)
    maps = np.zeros((n, height, width))
    per_chunk = max(1, _ROWS // len(corners))  # images whose copies go in one batch
    for start in range(0, n, per_chunk):
        chunk = images[start : start + per_chunk]  # (m, h, w)
        copies = np.repeat(chunk[:, None], len(corners), axis=1)  # (m, P, h, w)
        for i, (top, left) in enumerate(corners):
            copies[:, i, top : top + patch, left : left + patch] = BLANK
        occluded = model.predict_proba(copies.reshape(len(chunk) * len(corners), -1))
        rows = target[start : start + per_chunk]
        p = occluded.reshape(len(chunk), len(corners), -1)[
            np.arange(len(chunk)), :, rows]  # (m, P): the predicted class after each blanking
        drops = proba[np.arange(start, start + len(chunk)), rows][:, None] - p  # (m, P)
        drops[np.abs(drops) <= _ROUNDING] = 0.0
        for i, (top, left) in enumerate(corners):
            maps[start : start + len(chunk), top : top + patch, left : left + patch] += (
                drops[:, i, None, None])
    return maps / coverage


# ---------------------------------------------------------------------------- gradients


def _dlogp_dscores(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """d log softmax(scores)[target] / d scores = onehot(target) - softmax(scores), (n, k)."""
    from digitlab.models.base import softmax

    grad = -softmax(scores)
    grad[np.arange(len(scores)), target] += 1.0
    return grad


def input_gradient(model: DigitClassifier, X: Any) -> np.ndarray:
    """Exact gradient of the predicted class's log-probability with respect to each pixel.

    Backpropagation in float64 through the model's own forward pass
    (:func:`digitlab.models.softmax.forward`'s ``X @ W + b``, the MLP's
    :class:`~digitlab.models.layers.Network`), for :class:`~digitlab.models.Softmax`
    and :class:`~digitlab.models.MLP` (every output and activation). Tested
    against central differences.

    Parameters
    ----------
    model : Softmax or MLP
        Fitted.
    X : ndarray of shape (n, h*w) or (n, h, w)
        Pixels in [0, 1].

    Returns
    -------
    ndarray of shape (n, h, w), float64
        ``d log p[predicted] / d pixel``: positive where more ink would make
        the model surer of its answer. Multiply by the image for gradient x input.
    """
    images = _as_images(X)
    features = _flat(images).astype(np.float64)  # (n, d)
    kind = getattr(model, "kind", type(model).__name__)
    if kind == "softmax":
        dX = _softmax_input_gradient(model, features)
    elif kind == "mlp":
        dX = _mlp_input_gradient(model, features)
    else:
        raise SettingsError(f"input gradients need a softmax or mlp model, not {kind!r}; "
                            "use occlusion (any model) or integrated-gradients (cnn)")
    return dX.reshape(images.shape)


def _softmax_input_gradient(model: Any, X: np.ndarray) -> np.ndarray:
    from digitlab.models.softmax import forward

    params = {name: np.asarray(getattr(model, name), dtype=np.float64)
              for name in ("coef_", "intercept_")}
    z = forward(params, X)  # (n, k), k = 1 for two classes
    if z.shape[1] == 1:  # one sigmoid unit: scores (0, z), as Softmax._scores
        scores = np.column_stack([np.zeros(len(z)), z[:, 0]])
        dz = _dlogp_dscores(scores, np.argmax(scores, axis=1))[:, 1:]  # (n, 1)
    else:
        dz = _dlogp_dscores(z, np.argmax(z, axis=1))
    return dz @ params["coef_"].T  # (n, k) @ (k, d) -> (n, d)


def _mlp_input_gradient(model: Any, X: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    from digitlab.models.layers import Network

    params = {name: np.asarray(value, dtype=np.float64) for name, value in model.params_.items()}
    network = Network(params, model.activation)  # no dropout: the prediction-time network
    z = network.forward(X.copy())  # (n, n_out); the activations work in place
    n_out = z.shape[1]
    if n_out == 1:  # one sigmoid (or softmax-of-(0, z)) unit: scores (0, z)
        scores = np.column_stack([np.zeros(len(z)), z[:, 0]])
        dz = _dlogp_dscores(scores, np.argmax(scores, axis=1))[:, 1:]
    elif model.output == "softmax":
        dz = _dlogp_dscores(z, np.argmax(z, axis=1))
    else:
        # One sigmoid per class, normalised: p = softmax(log s(z)), and
        # d log s(z) / dz = 1 - s(z), so the chain rule adds that factor.
        from scipy.special import log_expit

        dz = _dlogp_dscores(log_expit(z), np.argmax(z, axis=1)) * (1.0 - expit(z))
    for i in range(network.n_layers - 1, -1, -1):  # Network.backward, down to the pixels
        da = network.dense[i].backward(dz, need_dX=True)
        assert da is not None
        dz = network.activations[i - 1].backward(da) if i > 0 else da
    return dz


# ---------------------------------------------------------------------------- CNN (Captum)


def _cnn_log_proba(model: Any) -> Any:
    """The CNN's log-probabilities as a differentiable function of images (n, 1, s, s),
    the same scores ``predict_proba`` turns into probabilities (test-time shifts included)."""
    import torch

    from digitlab.models.cnn import TTA_SHIFTS, _shift_fixed

    network = model.network_.eval()

    def log_proba(images: torch.Tensor) -> torch.Tensor:
        if not model.tta:
            return torch.log_softmax(network(images), dim=1)
        proba = torch.stack([torch.softmax(network(_shift_fixed(images, dy, dx)), dim=1)
                             for dy, dx in TTA_SHIFTS]).mean(0)
        return torch.log(proba.clamp_min(1e-30))

    return log_proba


def _captum(model: DigitClassifier, X: Any, method: str, **options: Any) -> np.ndarray:
    if getattr(model, "kind", None) != "cnn":
        raise SettingsError(f"{method} is for the cnn model, not {getattr(model, 'kind', model)!r}; "
                            "use occlusion (any model) or gradient (softmax, mlp)")
    try:
        import captum.attr
    except ModuleNotFoundError:
        raise SettingsError(f"{method} needs Captum, in the torch extra: "
                            "pip install 'digitlab[torch]'") from None
    import torch

    images = _as_images(X)
    target = predicted_index(model, images)
    device = next(model.network_.parameters()).device
    inputs = torch.from_numpy(np.ascontiguousarray(images[:, None])).to(device)  # (n, 1, h, w)
    inputs.requires_grad_()  # asked for here, or Saliency warns that it had to
    forward = _cnn_log_proba(model)
    if method == "integrated-gradients":
        # Baseline: the blank (all-background) image; maps sum to log p(x) - log p(blank).
        attributions = captum.attr.IntegratedGradients(forward).attribute(
            inputs, baselines=torch.zeros_like(inputs), target=torch.from_numpy(target).to(device),
            **options)
    else:  # signed gradient (Captum's default takes its absolute value)
        attributions = captum.attr.Saliency(forward).attribute(
            inputs, target=torch.from_numpy(target).to(device), abs=False)
    return attributions.detach().double().cpu().numpy()[:, 0]


def integrated_gradients(model: DigitClassifier, X: Any, *, n_steps: int = 32) -> np.ndarray:
    """Captum's integrated gradients of the CNN's predicted-class log-probability, (n, h, w).

    The path runs from the blank image (all 0, the background) to the digit in
    ``n_steps`` steps (Gauss-Legendre, Captum's default rule), so each map
    sums to about ``log p(digit) - log p(blank)``. Needs the ``torch`` extra.
    """
    return _captum(model, X, "integrated-gradients", n_steps=n_steps)


def saliency(model: DigitClassifier, X: Any) -> np.ndarray:
    """Captum's saliency (the input gradient) of the CNN's predicted-class log-probability,
    signed (not its absolute value), (n, h, w). Needs the ``torch`` extra."""
    return _captum(model, X, "saliency")


# ---------------------------------------------------------------------------- choice


def method_for(model: DigitClassifier) -> str:
    """The method ``explain(method="auto")`` uses for this model (:data:`AUTO_METHOD`);
    occlusion for a CNN loaded without PyTorch (Captum's methods need its network)."""
    if getattr(model, "numpy_net_", None) is not None:
        return "occlusion"
    return AUTO_METHOD.get(getattr(model, "kind", ""), "occlusion")


def explain(model: DigitClassifier, X: Any, method: str = "auto") -> np.ndarray:
    """Attribution maps of the predicted class for images ``X``, shape (n, h, w), signed.

    Parameters
    ----------
    model : DigitClassifier
        Any fitted digitlab model.
    X : ndarray of shape (n, h*w) or (n, h, w)
        Pixels in [0, 1], light ink on dark, as the model takes them.
    method : str
        ``"auto"`` (per model kind, the best by the deletion test:
        gradient x input for softmax and MLP, integrated gradients for the CNN,
        occlusion for the others), ``"occlusion"``, ``"gradient"``,
        ``"gradient-x-input"`` (softmax, MLP), ``"integrated-gradients"``,
        ``"saliency"`` (CNN).

    Returns
    -------
    ndarray of shape (n, h, w), float64
        Positive: the pixel supports the predicted class; negative: it argues
        against it; 0: no effect.
    """
    if method not in METHODS:
        raise SettingsError(f"unknown explain method {method!r}; choose from {', '.join(METHODS)}")
    if method == "auto":
        method = method_for(model)
    if method == "occlusion":
        return occlusion(model, X)
    if method == "gradient":
        return input_gradient(model, X)
    if method == "gradient-x-input":
        return input_gradient(model, X) * _as_images(X)
    if method == "integrated-gradients":
        return integrated_gradients(model, X)
    return saliency(model, X)


# ---------------------------------------------------------------------------- deletion test


@dataclass(frozen=True)
class Deletion:
    """The deletion test of a set of maps (:func:`deletion_curve`), averaged over images.

    ``attributed[i]`` / ``random[i]``: mean probability of the originally predicted
    class after blanking ``steps[i]`` pixels, the most attributed ones / random ones.
    The areas are the curves' means over k (trapezoids, divided by the range of k):
    a probability from 0 to 1, lower when the map finds the pixels that matter.
    """

    steps: np.ndarray
    attributed: np.ndarray
    random: np.ndarray
    auc_attributed: float
    auc_random: float

    @property
    def ratio(self) -> float:
        """``auc_attributed / auc_random``: below 1 when the map beats chance."""
        return self.auc_attributed / self.auc_random


def _area(steps: np.ndarray, curve: np.ndarray) -> float:
    if len(steps) < 2:
        return float(curve[0])
    return float(np.trapezoid(curve, steps) / (steps[-1] - steps[0]))


def deletion_curve(
    model: DigitClassifier, X: Any, maps: np.ndarray, *, steps: Iterable[int] = range(0, 201, 10),
    rng: int | np.random.Generator | None = 0,
) -> Deletion:
    """Blank the k most-attributed pixels of each image and follow the predicted class.

    For each k in ``steps``, the k pixels with the largest attribution (ties in
    pixel order) are set to 0 and ``predict_proba`` gives the probability of
    the class predicted for the whole image; the same with k pixels drawn at
    random (one permutation per image, from ``rng``). Every copy goes through
    the model in a few batches.

    Parameters
    ----------
    model : DigitClassifier
    X : ndarray of shape (n, h*w) or (n, h, w)
    maps : ndarray of shape (n, h, w) or (n, h*w)
        Attributions of the predicted class, e.g. from :func:`explain`.
    steps : iterable of int
        The numbers of pixels blanked, increasing, at most h*w.
    rng : int, Generator or None
        Draws the random orders.

    Returns
    -------
    Deletion
    """
    features = _flat(_as_images(X))  # (n, d)
    n, d = features.shape
    maps = np.asarray(maps, dtype=np.float64).reshape(n, -1)
    if maps.shape != (n, d):
        raise ValueError(f"maps must hold one value per pixel of X {(n, d)}, got {maps.shape}")
    ks = np.asarray(list(steps), dtype=np.int64)
    if len(ks) == 0 or ks.min() < 0 or ks.max() > d or np.any(np.diff(ks) <= 0):
        raise ValueError(f"steps must increase from 0 to at most {d}, got {ks.tolist()}")
    generator = np.random.default_rng(rng)
    target = np.argmax(model.predict_proba(features), axis=1)
    by_map = np.argsort(-maps, axis=1, kind="stable")  # (n, d): most attributed first
    at_random = generator.permuted(np.tile(np.arange(d), (n, 1)), axis=1)
    curves = []
    for order in (by_map, at_random):
        # rank[i, j]: where pixel j comes in image i's order; blank those ranked below k.
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(d)[None].repeat(n, axis=0), axis=1)
        copies = np.where(rank[:, None, :] < ks[None, :, None], np.float32(BLANK),
                          features[:, None, :])  # (n, K, d)
        proba = _proba(model, copies.reshape(n * len(ks), d).astype(np.float32))
        curves.append(proba.reshape(n, len(ks), -1)[np.arange(n), :, target].mean(axis=0))
    attributed, random = curves
    return Deletion(ks, attributed, random, _area(ks, attributed), _area(ks, random))


# ---------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class Explanation:
    """One picture's answer and why: ``prediction`` (as ``digitlab predict`` gives it,
    ``prediction.image`` the uint8 digit the model saw) and ``map``, float64 (h, w)."""

    prediction: Prediction
    map: np.ndarray
    method: str


def explain_images(
    reader_or_model: Reader | str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]] | Any,
    *, method: str = "auto", raw: bool = False,
) -> list[Explanation]:
    """Read pictures as ``digitlab predict`` does and explain each answer.

    Parameters
    ----------
    reader_or_model : Reader, or the path of a saved model
    paths : files, folders, arrays or PIL images (whatever :meth:`Reader.read` takes)
    method : str
        As :func:`explain`.
    raw : bool
        Pictures are already in the model's form (no MNIST-style normalisation).

    Returns
    -------
    list of Explanation
        In the order of the pictures; the map is of the class with the largest
        probability (also when the answer is "unknown" below a confidence).
    """
    from digitlab.reader import Reader, load_model

    reader = reader_or_model if isinstance(reader_or_model, Reader) else load_model(reader_or_model)
    predictions = reader.read(paths, raw=raw)
    return explain_predictions(reader.model, predictions, method=method)


def explain_predictions(
    model: DigitClassifier, predictions: Sequence[Prediction], *, method: str = "auto",
) -> list[Explanation]:
    """:class:`Explanation` of each prediction, from the images the model saw (one batch)."""
    if not predictions:
        return []
    images = np.stack([p.image for p in predictions]).astype(np.float32) / np.float32(255.0)
    used = method_for(model) if method == "auto" else method
    maps = explain(model, images, used)
    return [Explanation(p, m, used) for p, m in zip(predictions, maps, strict=True)]


def overlay(image: np.ndarray, attribution: np.ndarray, *, scale: int = 10) -> np.ndarray:
    """The digit in grey with the map over it: uint8 RGB (h*scale, w*scale, 3).

    Red where the pixel supports the answer, blue where it argues against it
    (matplotlib's ``RdBu_r``), opaque in proportion to ``|attribution|`` (up to
    0.75 at the map's largest magnitude), so faint values let the digit show.
    """
    from matplotlib import colormaps

    grey = np.asarray(image, dtype=np.float64) / 255.0  # (h, w)
    peak = float(np.abs(attribution).max())
    signed = attribution / peak if peak > 0 else np.zeros_like(attribution, dtype=np.float64)
    colour = colormaps["RdBu_r"]((signed + 1.0) / 2.0)[..., :3]  # (h, w, 3)
    alpha = 0.75 * np.abs(signed)[..., None]
    base = np.repeat(0.15 + 0.6 * grey[..., None], 3, axis=2)  # ink light grey, paper dark
    rgb = (1.0 - alpha) * base + alpha * colour
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)  # nearest: pixels stay square
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def write_overlay(path: str | os.PathLike[str], image: np.ndarray, attribution: np.ndarray) -> Path:
    """Write :func:`overlay` as a PNG at ``path``, whole or not at all."""
    from PIL import Image

    from digitlab.atomic import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(overlay(image, attribution)).save(tmp, format="PNG")
    return path


def explanation_names(paths: Sequence[str], *, suffix: str = "explain") -> list[str]:
    """The heat-map file name for each picture: ``scan.png`` -> ``scan.explain.png``; a
    name that repeats (``a/1.png``, ``b/1.png``) gets ``-2``, ``-3`` ... in the order given.
    ``suffix`` names other files made per picture the same way (``scan.input.png``)."""
    names, seen = [], set()
    for path in paths:
        stem = Path(path).stem or "input"
        name, count = f"{stem}.{suffix}.png", 1
        while name in seen:
            count += 1
            name = f"{stem}-{count}.{suffix}.png"
        seen.add(name)
        names.append(name)
    return names


def write_explanations(folder: str | os.PathLike[str], explanations: Sequence[Explanation]) -> list[Path]:
    """Write each explanation's :func:`overlay` PNG into ``folder`` (made when missing),
    named by :func:`explanation_names`, each file whole or not at all."""
    names = explanation_names([e.prediction.path for e in explanations])
    return [write_overlay(Path(folder) / name, e.prediction.image, e.map)
            for name, e in zip(names, explanations, strict=True)]


# Significant digits of a map's largest value kept in JSON (and at least this many decimals).
MAP_DIGITS = 4


def map_decimals(attribution: np.ndarray) -> int:
    """Decimals that keep :data:`MAP_DIGITS` significant digits of the map's largest value
    (at least that many): maps of confident models are small, and rounding must not blank them."""
    peak = float(np.abs(attribution).max())
    if not np.isfinite(peak) or peak == 0:
        return MAP_DIGITS
    return max(MAP_DIGITS, MAP_DIGITS - 1 - int(np.floor(np.log10(peak))))


def map_as_lists(attribution: np.ndarray) -> list[list[float]]:
    """A map as nested lists of floats (rows of the image), for JSON, rounded to
    :func:`map_decimals` (the same in ``predict --json`` and the web API)."""
    attribution = np.asarray(attribution, dtype=np.float64)
    return np.round(attribution, map_decimals(attribution)).tolist()
