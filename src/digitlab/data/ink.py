"""Find the ink, not the paper: printed lines of notebook paper taken out of a photo.

A digit written on ruled or squared paper is photographed with the paper's
printed lines. Normalisation (:func:`digitlab.data.preprocess.normalise_digit`)
takes whatever is darker than the paper as ink, so the lines join the digit:
the crop box spans the whole sheet and the digit shrinks to a few pixels
(ruled paper with blue ballpoint was read at 43%, squared paper with red ink
at 57%; see ``benchmarks/bench_photos.py``).

:func:`without_printed_lines` takes such lines out of the greyscale picture
before the ink is looked for. A printed line is *long, thin and straight*:
a grey-level opening of the darkness with a long line (1 x L) keeps, at each
pixel, the darkness of the faintest pixel along the longest run through it,
so it keeps a line that crosses the whole picture and drops the digit's
strokes, which are far shorter; a second opening across the line (K x 1,
K wider than any printed line) keeps the paper's own level and shading, and
the difference is the line alone. It is subtracted only in rows (columns)
where it runs across at least ``SPAN`` of the picture -- what a printed line
does and a written stroke does not. Where a stroke crosses a line the
opening holds the line's darkness, not the stroke's, so the stroke keeps
its ink: only the line's own darkness is taken away.

Clean drawings -- white ink on black, an MNIST image, any picture under
``MIN_SIDE`` or whose border is dark -- are returned untouched (the same
array), so their normalisation stays the same to the byte.
"""

from __future__ import annotations

import numpy as np

from digitlab.lazy_import import lazy_import

ndimage = lazy_import("scipy.ndimage")  # on first use: loading a dataset needs none of it

MIN_SIDE = 64
"""Pictures smaller than this on either side are drawings, not photos of paper: left alone."""

SPAN = 0.85
"""A printed line runs across at least this fraction of the picture; a written stroke does not."""

MIN_LINES = 3
"""Lines across the picture (two of them parallel suffice) that make it ruled or squared paper."""

LINE_CONTRAST = 8.0
"""Darkness (grey levels above the paper) from which a line pixel counts (paper grain is ~3)."""


def clean_paper(grey: np.ndarray, *, lighting: bool = True, lines: bool = True) -> np.ndarray:
    """A photo of paper with its shadows evened out and its printed lines lightened away.

    Parameters
    ----------
    grey : ndarray of shape (h, w), float
        Luminance 0..255.
    lighting : bool
        Divide by the paper's local brightness (:func:`even_lighting`).
    lines : bool
        Lighten long thin horizontal and vertical lines (:func:`without_printed_lines`).

    Returns
    -------
    ndarray of shape (h, w), float32
        ``grey`` itself (not a copy) when the picture is small or has a dark
        border (light ink on a dark ground: a drawing, an MNIST image).
    """
    h, w = grey.shape
    if min(h, w) < MIN_SIDE:
        return grey
    # The border's mean is a cheap test of the paper's polarity: a canvas
    # drawing (white ink on black) is left alone after ~10 us.
    frame = (grey[0].mean() + grey[-1].mean() + grey[:, 0].mean() + grey[:, -1].mean()) / 4
    if frame < 127.5:
        return grey
    if lighting:
        grey = even_lighting(grey)
    if lines:
        grey = without_printed_lines(grey)
    return grey


def even_lighting(grey: np.ndarray) -> np.ndarray:
    """Dark-on-light ``grey`` (float (h, w)) divided by its paper's local brightness, x 255.

    The paper's brightness is a grey-level closing (a local maximum, then a
    local minimum) over squares of a third of the picture's longer side: wider than any
    stroke, so the ink is gone from it, while the edge of a shadow -- which
    the smooth surface fitted later cannot follow -- is kept where it is.
    """
    size = max(15, max(grey.shape) // 3)
    # Smoothed first, so that the maximum is the paper's level, not its brightest grain.
    smooth = ndimage.uniform_filter(grey.astype(np.float32), size=5)
    paper = ndimage.grey_closing(smooth, size=(size, size))
    return np.minimum(grey * (255.0 / np.maximum(paper, 1.0)), 255.0).astype(np.float32)


def without_printed_lines(grey: np.ndarray) -> np.ndarray:
    """Dark-on-light ``grey`` (float (h, w)) with long horizontal and vertical printed lines
    lightened away: ``grey`` itself when there is none, else a new float32 array.

    The paper counts as printed only when two parallel lines cross it, or
    ``MIN_LINES`` lines in all (two rules and a notebook's margin): a tightly
    cropped 7 or 4 has at most one stroke across the picture each way. Then
    every line across it goes, the margin line too.
    """
    dark = 255.0 - grey.astype(np.float32)  # (h, w): ink and lines are high
    across = max(7, min(grey.shape) // 40)  # wider than any printed line at this size
    rows, row_count = _line_rows(dark, across)
    cols, col_count = _line_rows(dark.T, across)
    if max(row_count, col_count) < 2 and row_count + col_count < MIN_LINES:
        return grey
    lines = np.zeros_like(dark)
    if row_count:
        lines += rows
    if col_count:
        lines += cols.T
    return np.minimum(grey + lines, 255.0).astype(np.float32)


def _line_rows(dark: np.ndarray, across: int) -> tuple[np.ndarray, int]:
    """Darkness of the long thin lines along the rows of ``dark`` (float32 (h, w), 0 elsewhere)
    and how many such lines there are."""
    w = dark.shape[1]
    length = max(MIN_SIDE // 2, w // 3)  # much longer than a stroke of a digit that fits in the picture
    along = ndimage.grey_opening(dark, size=(1, length))  # long runs along the rows survive
    ridge = along - ndimage.grey_opening(along, size=(across, 1))  # minus the paper: thin ones only
    # A printed line crosses the picture: keep the rows where one does.
    rows = (ridge > LINE_CONTRAST).mean(axis=1) >= SPAN
    count = int(ndimage.label(rows)[1])
    if not count:
        return dark, 0
    rows = ndimage.binary_dilation(rows, iterations=2)  # and the line's anti-aliased edges
    # The opening measures a line by its faintest stretch: LINE_CONTRAST more takes the
    # rest, which would otherwise stay as faint ink touching the strokes (kept as their edge).
    lines = np.maximum(ridge, 0.0) + np.float32(LINE_CONTRAST)
    return np.where(rows[:, None], lines, np.float32(0.0)).astype(np.float32), count
