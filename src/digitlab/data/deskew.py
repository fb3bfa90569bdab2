"""Deskewing: stand slanted digits upright, the classic fix for linear models on MNIST.

People slant their digits by different amounts, and a linear model (one
weight per pixel) must then spread each stroke's weight over every slant it
has seen. LeCun et al. (1998) report that deskewing the images first takes a
linear classifier's MNIST test error from 12% to 8.4%; on the bundled sample
it takes "is it a 2" with logistic regression from 97.7% to 98.7%.

The slant is read from the image's second moments: with ink ``I(r, c)``, its
centre of mass ``(r0, c0)``, the row variance ``var_r`` and the covariance
``cov_rc``, the ink's main axis leans by ``-cov_rc / var_r`` columns per row
(rows count downwards). Each row is slid sideways to undo that lean, and the
centre of mass is moved to the middle of the frame to a fraction of a pixel,
with bilinear interpolation.
"""

from __future__ import annotations

import numpy as np

# A slant steeper than this (45 degrees) is no slant to undo but a digit that
# is mostly one horizontal stroke (a "-" or a flat 7): leave it lying down.
MAX_SLANT = 1.0
CHUNK = 8192  # images deskewed at once


def slants(images: np.ndarray) -> np.ndarray:
    """The lean of each image's ink, in columns per row (positive: leaning right), float64 ``(n,)``.

    Leaning right means the top is further right than the bottom, so with rows
    counted downwards the covariance of row and column is negative; the sign is
    flipped so that "/" reads as positive. Blank images and images whose ink
    lies in one row have no slant (0).
    """
    return _ink_moments(images)[3]


def _ink_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image: whether it has ink, the centre of mass row and column, and the lean (each ``(n,)``)."""
    ink = np.asarray(images, dtype=np.float64)  # (n, h, w)
    n, h, w = ink.shape
    rows = np.arange(h, dtype=np.float64)[None, :, None]
    cols = np.arange(w, dtype=np.float64)[None, None, :]
    total = ink.sum(axis=(1, 2))  # (n,)
    safe = np.where(total > 0, total, 1.0)
    r0 = (ink * rows).sum(axis=(1, 2)) / safe
    c0 = (ink * cols).sum(axis=(1, 2)) / safe
    dr = rows - r0[:, None, None]  # (n, h, 1)
    dc = cols - c0[:, None, None]  # (n, 1, w)
    var_r = (ink * dr**2).sum(axis=(1, 2)) / safe
    cov = (ink * dr * dc).sum(axis=(1, 2)) / safe
    lean = np.divide(-cov, var_r, out=np.zeros(n), where=var_r > 1e-12)
    return total > 0, r0, c0, np.where(np.abs(lean) <= MAX_SLANT, lean, 0.0)


def deskew_images(images: np.ndarray) -> np.ndarray:
    """Each image sheared upright and its centre of mass moved to ``(h/2, w/2)``; uint8 ``(n, h, w)``.

    As in the classic deskewing code, the output pixel ``(r, c)`` reads the
    input at row ``r + (r0 - h/2)`` and column ``c + lean * (h/2 - r) + (c0 - w/2)``,
    by bilinear interpolation (zero outside), so ink is centred to a fraction
    of a pixel as well as stood upright: on the bundled sample the centring is
    worth half a point of accuracy to a linear model, on top of the shear. The
    two axes are done one after the other with the same gather, vectorised
    over the whole batch.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, h, w), got {images.shape}")
    if len(images) > CHUNK:  # bounded memory: the gathers hold a few (n, h, w) arrays
        return np.concatenate([deskew_images(images[start:start + CHUNK])
                               for start in range(0, len(images), CHUNK)])
    _n, h, w = images.shape
    ink = images.astype(np.float32)
    has_ink, r0, c0, lean = _ink_moments(images)
    down = np.where(has_ink, r0 - h / 2, 0.0)  # how far to read below each output row
    right = np.where(has_ink, c0 - w / 2, 0.0)
    # Rows first (a constant fractional shift per image, done on the transposed
    # images), then columns (a shift per output row: the shear and the centring).
    moved_up = _read_along_rows(ink.transpose(0, 2, 1), np.repeat(down[:, None], w, axis=1))
    sideways = lean[:, None] * (h / 2 - np.arange(h)[None, :]) + right[:, None]  # (n, h)
    upright = _read_along_rows(moved_up.transpose(0, 2, 1), sideways)
    return np.clip(np.rint(upright), 0, 255).astype(np.uint8)


def _read_along_rows(images: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``out[k, r, c] = images[k, r, c + offset[k, r]]``, linearly interpolated, zero outside.

    ``images`` is float32 ``(n, h, w)`` and ``offset`` float ``(n, h)``.
    """
    w = images.shape[2]
    source = np.arange(w)[None, None, :] + offset[:, :, None]  # (n, h, w) columns to read
    left = np.floor(source)
    weight = (source - left).astype(np.float32)
    # One zero column on each side; reads further out are clipped onto it, so
    # they read zero too.
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1)))
    first = left.astype(np.int64) + 1  # index of the left neighbour in the padded row
    left_value = np.take_along_axis(padded, np.clip(first, 0, w + 1), axis=2)
    right_value = np.take_along_axis(padded, np.clip(first + 1, 0, w + 1), axis=2)
    return left_value * (1.0 - weight) + right_value * weight
