"""Photo-like pictures of digits, made from MNIST images: a test set for photo normalisation.

People photograph digits written on real paper: a lighting gradient across
the sheet, paper grain, pencil or marker, notebook paper whose printed lines
are as dark as a light pencil stroke, coloured ink, JPEG. :func:`photo_like`
turns one MNIST digit (uint8 28x28, ink 255) into such an RGB picture of
200-640 px, so every kind of picture can be measured against the digit's known
label (see ``benchmarks/bench_photos.py``) without a single real photo.

Every picture is made from the digit's own strokes: upscaled smoothly to the
written size, turned into an ink coverage ``alpha`` in [0, 1], and laid over
the paper as ``paper * (1 - alpha) + ink * alpha`` -- ink covers the paper
and the lines printed on it -- then lit, noised and (for ``"jpeg"``)
compressed. Everything random is drawn from ``rng``: the same seed gives the
same pictures.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

KINDS = (
    "plain", "shadow", "pencil", "marker", "thin-pen", "shear-blur", "small",
    "ruled-blue", "squared-red", "ruled-black", "jpeg",
)
"""Every kind of picture :func:`photo_like` makes, in the order benchmarks print them."""

# Colours (RGB) as a phone sees them under room light: nothing is pure.
_PAPER = np.array([238.0, 236.0, 228.0])  # off-white, a little warm
_BLACK_INK = np.array([35.0, 35.0, 45.0])
_BLUE_BALLPOINT = np.array([30.0, 45.0, 150.0])
_RED_INK = np.array([190.0, 35.0, 40.0])
_PENCIL = np.array([110.0, 110.0, 115.0])
_RULE_BLUE = np.array([150.0, 185.0, 225.0])  # a notebook's pale blue lines
_GRID_GREY = np.array([165.0, 190.0, 195.0])  # squared paper's grey-green grid


def photo_like(digit: np.ndarray, kind: str, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One MNIST digit as a photo-like RGB picture of the given ``kind``.

    Parameters
    ----------
    digit : ndarray of shape (28, 28), uint8
        MNIST's form: ink 255 on background 0.
    kind : str
        One of :data:`KINDS`.
    rng : int, Generator or None
        The randomness (size, position, colours, lines, noise).

    Returns
    -------
    ndarray of shape (h, w, 3), uint8
        Dark ink on light paper, ``h`` and ``w`` between 200 and 640.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    digit = np.asarray(digit)
    if digit.shape != (28, 28) or digit.dtype != np.uint8:
        raise ValueError(f"digit must be uint8 (28, 28), got {digit.dtype} {digit.shape}")
    rng = np.random.default_rng(rng)
    small = kind == "small"
    h, w = (int(rng.integers(520, 641)), int(rng.integers(520, 641))) if small else (
        int(rng.integers(220, 401)), int(rng.integers(220, 401)))
    # The written digit's side (MNIST's 28 px frame; its ink spans about 20/28 of that).
    side = int(rng.uniform(0.08, 0.12) * min(h, w) / 0.7) if small else int(
        rng.uniform(0.45, 0.75) * min(h, w) / 0.7 * 0.75)
    alpha = _strokes(digit, side, kind, rng)  # (side, side) in [0, 1]

    paper = _paper(h, w, kind, side, rng)  # (h, w, 3) float
    ink_colour = {"ruled-blue": _BLUE_BALLPOINT, "squared-red": _RED_INK,
                  "pencil": _PENCIL}.get(kind, _BLACK_INK) + rng.normal(0, 8, 3)
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    if not small:  # mostly central, as people aim the camera at the digit
        top = (top + (h - side) // 2) // 2
        left = (left + (w - side) // 2) // 2
    cover = np.zeros((h, w))
    cover[top : top + side, left : left + side] = alpha
    picture = paper * (1.0 - cover[..., None]) + ink_colour * cover[..., None]

    picture *= _lighting(h, w, kind, rng)[..., None]
    picture += rng.normal(0.0, 2.5, picture.shape)  # sensor noise
    out = np.clip(np.rint(picture), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=int(rng.integers(10, 26)))
        out = np.asarray(Image.open(buffer).convert("RGB")).copy()
    return out


def photo_like_set(
    digits: np.ndarray, kind: str, rng: np.random.Generator | int | None = None
) -> list[np.ndarray]:
    """:func:`photo_like` for each digit of a uint8 stack ``(n, 28, 28)``, one ``rng`` for all."""
    rng = np.random.default_rng(rng)
    return [photo_like(digit, kind, rng) for digit in digits]


def _strokes(digit: np.ndarray, side: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The digit's ink coverage at the written size, float (side, side) in [0, 1]."""
    image = digit.astype(np.float64) / 255.0
    if kind == "shear-blur":  # a slanted hand: shear about the centre, up to ~0.35
        shear = rng.uniform(0.2, 0.35) * rng.choice([-1.0, 1.0])
        matrix = np.array([[1.0, 0.0], [shear, 1.0]])
        offset = np.array([14.0, 14.0]) - matrix @ np.array([14.0, 14.0])
        image = ndimage.affine_transform(image, matrix, offset=offset, order=1)
    big = np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(
        (side, side), Image.Resampling.BICUBIC), dtype=np.float64)
    px = side / 28.0  # one MNIST pixel in picture pixels
    if kind == "marker":  # a felt tip: every stroke about twice as wide
        big = ndimage.grey_dilation(big, size=max(3, int(1.2 * px)))
    # A pen's stroke has sharp edges: MNIST's soft grey rim becomes a crisp boundary.
    cut = {"thin-pen": 0.75, "marker": 0.35}.get(kind, 0.45)
    alpha = np.clip((big - cut) / 0.15 + 0.5, 0.0, 1.0)
    if kind == "pencil":  # graphite is grainy and never fully covers the paper
        alpha *= np.clip(rng.uniform(0.55, 0.75) + rng.normal(0, 0.15, alpha.shape), 0.0, 1.0)
    if kind == "shear-blur":  # out of focus
        alpha = ndimage.gaussian_filter(alpha, sigma=rng.uniform(0.6, 1.0) * px)
    return alpha


def _paper(h: int, w: int, kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """Paper with its grain and, for notebook kinds, printed lines: float (h, w, 3)."""
    tint = _PAPER + rng.normal(0, 6, 3)
    # Grain: fine noise plus a faint blotchy texture (fibres, uneven whiteness).
    grain = rng.normal(0, 3.0, (h, w)) + ndimage.gaussian_filter(rng.normal(0, 30, (h, w)), 6)
    paper = tint[None, None, :] + grain[..., None]
    if kind in ("ruled-blue", "ruled-black", "squared-red"):
        # Spacing relative to the written digit, as a hand writes to fit the lines.
        squared = kind == "squared-red"
        spacing = side * (rng.uniform(0.25, 0.4) if squared else rng.uniform(0.4, 0.6))
        colour = _GRID_GREY if squared else _RULE_BLUE
        thickness = rng.uniform(1.0, 2.5)
        lines = _lines(h, spacing, rng.uniform(0, spacing), thickness)[:, None] * np.ones((1, w))
        if squared:
            vertical = _lines(w, spacing, rng.uniform(0, spacing), thickness)[None, :]
            lines = np.maximum(lines, vertical * np.ones((h, 1)))
        else:  # a notebook's red margin line, somewhere near the left
            margin = _lines(w, 10 * w, rng.uniform(0.05, 0.2) * w, thickness)[None, :]
            paper = paper * (1 - margin[..., None]) + np.array([220.0, 120.0, 130.0]) * margin[..., None]
        strength = rng.uniform(0.7, 1.0)
        paper = paper * (1 - strength * lines[..., None]) + colour * (strength * lines[..., None])
    return paper


def _lines(n: int, spacing: float, phase: float, thickness: float) -> np.ndarray:
    """Coverage (n,) in [0, 1] of anti-aliased lines every ``spacing`` px from ``phase``."""
    position = np.arange(n) + 0.5
    distance = np.abs((position - phase + spacing / 2) % spacing - spacing / 2)
    return np.clip(thickness / 2 + 0.5 - distance, 0.0, 1.0)


def _lighting(h: int, w: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A brightness factor (h, w): a gradient from the light source; a cast shadow for "shadow"."""
    y, x = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (x / w - 0.5) + np.sin(angle) * (y / h - 0.5))  # about -0.7..0.7
    light = 1.0 - rng.uniform(0.0, 0.25) * (ramp + 0.7) / 1.4
    if kind == "shadow":  # a hand or a phone between the lamp and the sheet: a soft-edged band
        angle = rng.uniform(0, 2 * np.pi)
        along = np.cos(angle) * (x - w / 2) + np.sin(angle) * (y - h / 2)
        edge = rng.uniform(-0.2, 0.2) * min(h, w)
        softness = rng.uniform(0.02, 0.08) * min(h, w)
        inside = 1.0 / (1.0 + np.exp(-(along - edge) / softness))
        light *= 1.0 - rng.uniform(0.35, 0.55) * inside
    return light
