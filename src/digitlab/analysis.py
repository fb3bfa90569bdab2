"""What a model learned, as numbers: pixel importance, average digits, which
digit is mistaken for which, and the worst-written digits.

Everything here takes arrays and returns arrays or JSON-ready values; the
figures of the same things are in :mod:`digitlab.plots`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pixel_ranking(weights: np.ndarray, shape: tuple[int, int], k: int = 5) -> dict[str, Any]:
    """The pixels whose weights most raise and most lower a linear score.

    For a score ``w · x + b`` with ink ``x >= 0``, inking the pixel with the
    largest weight raises the score most, and inking the one with the most
    negative weight lowers it most.

    Parameters
    ----------
    weights : ndarray of shape (h*w,)
    shape : (h, w)
    k : int
        How many of each to list.

    Returns
    -------
    dict with ``most_positive_pixel`` and ``most_negative_pixel`` as
    ``[row, col]``, and ``top_positive`` / ``top_negative``: lists of
    ``{"index", "row", "col", "weight"}``, strongest first.
    """
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.size != shape[0] * shape[1]:
        raise ValueError(f"{weights.size} weights do not fill a {shape[0]}x{shape[1]} image")
    order = np.argsort(weights, kind="stable")
    k = min(k, weights.size)

    def entries(indices: np.ndarray) -> list[dict[str, Any]]:
        return [
            {"index": int(i), "row": int(i // shape[1]), "col": int(i % shape[1]),
             "weight": float(weights[i])}
            for i in indices
        ]  # fmt: skip

    positive, negative = entries(order[::-1][:k]), entries(order[:k])
    return {
        "most_positive_pixel": [positive[0]["row"], positive[0]["col"]],
        "most_negative_pixel": [negative[0]["row"], negative[0]["col"]],
        "top_positive": positive,
        "top_negative": negative,
    }


def describe_pixel_ranking(ranking: dict[str, Any], positive_name: str) -> str:
    """A plain-language reading of :func:`pixel_ranking` for the report."""
    pos, neg = ranking["top_positive"][0], ranking["top_negative"][0]
    return (
        f"Ink at row {pos['row']}, column {pos['col']} pushes the model hardest towards "
        f"“{positive_name}” (weight {pos['weight']:+.3f}); ink at row {neg['row']}, column "
        f"{neg['col']} pushes hardest against it (weight {neg['weight']:+.3f}). Pixels where "
        f"“{positive_name}” usually has ink and other digits do not get positive weights; "
        "pixels where other digits have ink get negative ones."
    )


def average_images(images: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Mean image of each class, float64 ``(n_classes, h, w)`` in the images' 0..255 scale."""
    images = np.asarray(images)
    out = np.zeros((len(classes), *images.shape[1:]))
    for i, label in enumerate(classes):
        members = images[labels == label]
        if len(members):
            out[i] = members.mean(axis=0)
    return out


def mistaken_for(
    y_true: np.ndarray, y_pred: np.ndarray, target: int, labels: np.ndarray,
    *, include_target: bool = True,
) -> list[dict[str, Any]]:
    """The share of each true digit's images predicted as ``target``.

    "Which digit is most often mistaken for a 5": the target's own share first (the
    share of true 5s read as 5, as the classic exercise's ranking starts), then every
    other digit, largest share first (ties by label). ``include_target=False`` leaves
    the target's own entry out. Each entry: ``{"label", "count", "total", "percent"}``.
    """
    ranking = []
    for label in labels:
        if label == target and not include_target:
            continue
        members = y_true == label
        total = int(members.sum())
        count = int(np.sum(y_pred[members] == target))
        ranking.append({"label": int(label), "count": count, "total": total,
                        "percent": 100.0 * count / total if total else 0.0})
    return sorted(ranking, key=lambda entry: (entry["label"] != target, -entry["percent"], entry["label"]))


def sample_per_class(
    labels: np.ndarray, n: int, rng: int | np.random.Generator | None = 0,
    *, classes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``n`` images drawn at random, as evenly over ``classes`` as they allow.

    Example grids show these rather than the first ``n`` images: a class-sorted source
    (a Kaggle PNG tree, an .npz) starts with all its zeros, and on "is it a 2" the first
    images are all "not 2". Each class gets ``n // k`` images (the first ``n % k``
    classes one more); a class with too few gives its share to the others. Returned
    grouped by class, in the order of ``classes`` (default: the labels present).
    """
    labels = np.asarray(labels)
    generator = np.random.default_rng(rng)
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    pools = [generator.permutation(np.flatnonzero(labels == c)) for c in classes]
    n = min(n, sum(len(pool) for pool in pools))
    taken = [0] * len(pools)
    while sum(taken) < n:  # round robin: one more from each class that still has images
        for i, pool in enumerate(pools):
            if taken[i] < len(pool) and sum(taken) < n:
                taken[i] += 1
    return np.concatenate([pool[:k] for pool, k in zip(pools, taken, strict=True)] or [np.array([], int)]).astype(np.int64)


def most_confused_pairs(matrix: np.ndarray, labels: list[int], top: int = 5) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of a confusion matrix: true label read as another.

    Each entry: ``{"true", "predicted", "count", "percent"}`` where percent is of
    the true label's images.
    """
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for cell in flat:
        i, j = np.unravel_index(cell, off.shape)
        if off[i, j] == 0:
            break
        pairs.append({"true": int(labels[i]), "predicted": int(labels[j]), "count": int(off[i, j]),
                      "percent": 100.0 * off[i, j] / totals[i]})
    return pairs


def true_class_probability(proba: np.ndarray, y_true: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``p(true label)`` of each sample, shape (n,); 0 for labels the model never saw."""
    # imported here: digitlab.metrics imports scikit-learn, which the data's figures do without
    from digitlab.metrics import class_positions

    positions = class_positions(np.asarray(classes), np.asarray(y_true))
    picked = proba[np.arange(len(y_true)), np.maximum(positions, 0)]
    return np.where(positions >= 0, picked, 0.0)


def worst_written(
    proba: np.ndarray, y_true: np.ndarray, classes: np.ndarray, label: int, k: int = 10
) -> np.ndarray:
    """Indices of the ``k`` images of ``label`` with the lowest predicted p(``label``)."""
    p_true = true_class_probability(proba, y_true, classes)
    members = np.flatnonzero(y_true == label)
    return members[np.argsort(p_true[members], kind="stable")[:k]]


def top_losses(proba: np.ndarray, y_true: np.ndarray, classes: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the ``k`` images with the largest loss -log p(true label), worst first."""
    p_true = true_class_probability(proba, y_true, classes)
    return np.argsort(p_true, kind="stable")[:k]
