"""Seeded, stratified hold-out splits: one rule for datasets and early stopping."""

from __future__ import annotations

import numpy as np


def stratified_holdout(
    labels: np.ndarray, fraction: float, rng: int | np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held_out)`` of a stratified hold-out, both sorted.

    Each class gives ``round(fraction * n_class)`` samples to the hold-out, at
    least one and never all when it has two or more, chosen by one permutation
    per class (in label order) drawn from ``np.random.default_rng(rng)``.
    Sorted indices keep the stored order within each part.

    Raises
    ------
    ValueError
        If ``fraction`` is not strictly between 0 and 1, or nothing can be held out.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the hold-out fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(rng)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = round(fraction * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        held.append(rng.permutation(members)[:take])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    if len(held_out) == 0:
        raise ValueError("too few samples to hold out a stratified split")
    kept = np.ones(len(labels), dtype=bool)
    kept[held_out] = False
    return np.flatnonzero(kept), held_out
