"""Preprocessing: resizing datasets, and MNIST-style normalisation of a user's own image.

Two jobs live here.

1. :func:`resize_images` shrinks (or enlarges) a whole stack of images, e.g.
   MNIST's 28x28 to the 20x20 of ``--image-size 20``. Shrinking is *area
   averaging*: every output pixel is the mean of the input area it covers,
   fractional pixels weighted by how much of them it covers (OpenCV's
   ``INTER_AREA``). It is the natural anti-aliasing for strokes -- a pixel's
   grey level is how much of it the ink covers, which is how MNIST's grey
   levels arose from NIST's black-and-white scans -- it keeps the total ink
   (mean intensity) exactly, and it has no negative lobes, so unlike Lanczos
   it cannot ring or overshoot into clipped halos around strokes. (Pillow's
   ``BOX`` filter agrees with it at integer ratios; at 28 -> 20 Pillow weighs
   whole pixels by where their centres fall instead of by overlap: measured on
   the bundled sample's 5,000 digits at 28 -> 20, Pillow's ``BOX`` differs from
   the area average by up to 125 grey levels, on 23% of pixels by more than 1,
   so the resampler stays; ``Image.reduce(2)`` matches 28 -> 14 within 1.) Enlarging
   uses linear interpolation. Both are separable, so a stack of ``n`` images is
   two matrix products, fast for all 70,000 MNIST images at once.

2. :func:`normalise_digit` turns a user's picture -- a phone photo of a dark
   digit on white paper, any size and off-centre, or a white-on-black drawing
   -- into what MNIST models were trained on: 28x28, ink 255 on background 0,
   the digit scaled so its longer side is 20 px and placed so its centre of
   mass is at pixel (14, 14), as LeCun & Cortes describe MNIST. The steps, and
   why, are in its docstring. :func:`load_user_image` reads such a file safely
   and :func:`prepare_for_model` adapts the result to a model's input shape.

Alpha rule for users' images: a transparent pixel is *paper* (white), because
a drawing exported from a canvas is dark strokes on nothing. Dataset image
trees follow the opposite rule (transparent = background = black, MNIST's 0);
see :mod:`digitlab.data.imagetree`.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitlab.data import files, ink
from digitlab.data.formats import as_uint8_images
from digitlab.data.imagetree import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    damaged_header,
    plain_png_rows,
    plain_png_size,
    unfilter_png_rows,
)
from digitlab.errors import DataError
from digitlab.lazy_import import lazy_import

# Imported on first use (0.2-0.3 s): a run on a dataset's own arrays never normalises a
# picture, and loading its data should not wait for it.
ndimage = lazy_import("scipy.ndimage")

MNIST_SIZE = 28
"""Side of an MNIST image."""
MNIST_BOX = 20
"""Side of the box MNIST digits are scaled to fit (longer side exactly 20 px)."""
MNIST_CENTRE = (14.0, 14.0)
"""Where MNIST puts a digit's centre of mass, in pixel indices (row, column).

Measured on the bundled sample: the mean is (13.99, 14.01) with a standard
deviation of 0.29 on each axis -- exactly that of rounding to the nearest
pixel, so MNIST translated by whole pixels, and so do we.
"""

# Pictures whose longer side is at least twice this are block-averaged down
# by a whole factor before normalising (to 512..1023 px): a digit filling a
# tenth of the frame keeps over 50 px, more than twice what the 20 px box
# needs, and a 12-megapixel photo costs no more than a small one.
WORK_SIDE = 512

# Pictures smaller than this (on either side) are not photos: their paper is
# taken as flat instead of fitting a shading surface to a handful of pixels.
SHADING_MIN_SIDE = 32

# A picture whose ink differs from the paper by less than this fraction of the
# paper's brightness (~25 grey levels on white paper) is taken as blank.
MIN_CONTRAST = 0.1

Size = int | tuple[int, int]


# ---------------------------------------------------------------- resizing


@functools.lru_cache(maxsize=4096)  # a picture's crop takes one of few sizes: ~7 us each call
def _axis_weights(
    n_in: int,
    n_out: int,
    *,
    extent: float | None = None,
    edge: Literal["clamp", "zero"] = "clamp",
) -> np.ndarray:
    """Resampling matrix ``W`` of shape (n_out, n_in): ``out = W @ in`` along one axis.

    Source pixel ``i`` covers ``[i, i+1]``; the whole source row is mapped onto
    the destination interval ``[0, extent]`` (``extent`` defaults to ``n_out``:
    a plain resize), destination pixel ``j`` covers ``[j, j+1]``.

    Shrinking (``extent <= n_in``) is area averaging: ``W[j, i]`` is the part
    of destination pixel ``j`` that source pixel ``i`` covers, so each row sums
    to the fraction of pixel ``j`` that lies inside the image. Enlarging is
    linear interpolation between source pixel centres; ``edge`` says what lies
    beyond the first and last pixel: the edge value (``"clamp"``) or
    background (``"zero"``).
    """
    extent = float(n_out if extent is None else extent)
    scale = extent / n_in
    if scale <= 1.0:
        src_lo = np.arange(n_in) * scale  # (n_in,)  where each source pixel lands
        src_hi = src_lo + scale
        dst = np.arange(n_out, dtype=np.float64)[:, None]  # (n_out, 1)
        overlap = np.minimum(src_hi, dst + 1.0) - np.maximum(src_lo, dst)  # (n_out, n_in)
        return _read_only(np.clip(overlap, 0.0, None))
    # Destination pixel centre j + 0.5 sits at source position (j + 0.5) / scale,
    # i.e. between source pixel centres floor(x) and floor(x) + 1 (x in index units).
    x = (np.arange(n_out) + 0.5) / scale - 0.5
    left = np.floor(x).astype(np.int64)
    frac = x - left
    weights = np.zeros((n_out, n_in + 2))  # one extra column either side for "outside"
    rows = np.arange(n_out)
    for index, w in ((left, 1.0 - frac), (left + 1, frac)):
        if edge == "clamp":
            index = np.clip(index, 0, n_in - 1)
        np.add.at(weights, (rows, np.clip(index, -1, n_in) + 1), w)
    return _read_only(weights[:, 1:-1])  # "zero": whatever fell outside the image is dropped


def _read_only(array: np.ndarray) -> np.ndarray:
    """``array``, made read-only: a cached result is shared by every caller."""
    array.flags.writeable = False
    return array


def _size_pair(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int | np.integer) else size
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(h), int(w)


def resize_images(images: np.ndarray, size: Size, *, chunk: int = 2048) -> np.ndarray:
    """Resize a stack of images, anti-aliased (area averaging when shrinking).

    Parameters
    ----------
    images : ndarray of shape (n, h, w), uint8
    size : int or (height, width)
        Output side (square) or shape, e.g. ``20`` for MNIST's 28 -> 20.
    chunk : int
        Images resized per step; bounds the float32 working memory.

    Returns
    -------
    ndarray of shape (n, height, width), uint8
        Rounded to the nearest level. ``images`` itself when the size already
        matches (no copy).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (n, h, w), got {images.dtype} {images.shape}")
    out_h, out_w = _size_pair(size)
    n, h, w = images.shape
    if (h, w) == (out_h, out_w):
        return images
    wy = _axis_weights(h, out_h).astype(np.float32)  # (out_h, h)
    wx_t = _axis_weights(w, out_w).T.astype(np.float32)  # (w, out_w)
    out = np.empty((n, out_h, out_w), dtype=np.uint8)
    for start in range(0, n, chunk):
        block = images[start : start + chunk].astype(np.float32)  # (m, h, w)
        m = len(block)
        # Columns first, as one big matrix product: (m*h, w) @ (w, out_w).
        cols = (block.reshape(m * h, w) @ wx_t).reshape(m, h, out_w)
        # Then rows: bring h to the end so it is one product again: (m*out_w, h) @ (h, out_h).
        rows = cols.transpose(0, 2, 1).reshape(m * out_w, h) @ wy.T
        rows = rows.reshape(m, out_w, out_h).transpose(0, 2, 1)  # (m, out_h, out_w)
        np.clip(np.rint(rows), 0, 255, out=rows)
        out[start : start + m] = rows
    return out


# ---------------------------------------------------------------- reading users' images


def to_greyscale(image: Image.Image, source: str | os.PathLike[str] = "image") -> np.ndarray:
    """A user's picture as uint8 ``(h, w)`` luminance, the way it is displayed.

    1. The EXIF orientation is applied (phones store photos sideways and tag
       them), so the digit is upright.
    2. Transparency is flattened onto **white**: in a user's drawing or photo a
       transparent pixel is paper. (Dataset trees use the opposite rule,
       transparent = background = black; see :mod:`digitlab.data.imagetree`.)
    3. Colour becomes luminance with ITU-R 601 weights (0.299 R + 0.587 G +
       0.114 B, Pillow's own rule).

    16-bit images are scaled by 255/65535; 32-bit integer images whose values
    exceed 255 are taken as 16-bit; float images follow
    :func:`~digitlab.data.formats.as_uint8_images` (0..1 or 0..255).
    """
    try:
        image = ImageOps.exif_transpose(image) or image
    except (ValueError, TypeError, OSError, SyntaxError):
        pass  # a broken EXIF block is no reason to refuse the picture: keep it as stored
    mode = image.mode
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values * (255.0 / 65535.0)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if mode == "F":
        return as_uint8_images(np.asarray(image)[None], os.fspath(source))[0]
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        if not has_alpha:  # Pillow's own conversion: the same weights, no float copy
            rgb = image if mode == "RGB" else image.convert("RGB")
            return np.asarray(rgb.convert("L"), dtype=np.uint8).copy()
        rgba = image.convert("RGBA")
    except (ValueError, OSError) as exc:
        raise DataError(source, f"cannot convert a {mode} image to greyscale ({exc})") from None
    pixels = np.asarray(rgba)  # (h, w, 4) uint8
    grey = np.empty(pixels.shape[:2], dtype=np.uint8)
    # A band of rows at a time: float32 copies of a whole 16-megapixel picture would
    # take a gigabyte; per band they take a few megabytes, with the same result.
    rows = max(1, _BAND_PIXELS // max(1, pixels.shape[1]))
    for top in range(0, len(grey), rows):
        grey[top : top + rows] = _luma_over_white(pixels[top : top + rows])
    return grey


_BAND_PIXELS = 1 << 18


def _luma_over_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 ``(h, w, 4)`` -> uint8 ``(h, w)`` luminance, composited over white paper."""
    pixels = rgba.astype(np.float32) / 255.0  # (h, w, 4) in [0, 1]
    alpha = pixels[..., 3:]
    rgb = pixels[..., :3] * alpha + (1.0 - alpha)  # composite over white paper
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (h, w)
    return np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)


def load_user_image(
    path: str | os.PathLike[str], *, max_side: int | None = None, max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Read one picture file safely into uint8 ``(h, w)`` greyscale (see :func:`decode_user_image`).

    The file is read into memory and decoded from there (no handle is kept
    open). Only a regular file of at most
    :data:`~digitlab.data.imagetree.MAX_FILE_BYTES` is read, and at most
    ``max_pixels`` are decoded (by default
    :data:`~digitlab.data.imagetree.MAX_PIXELS`, as for the images of a
    tree); anything else raises a :class:`~digitlab.errors.DataError`.
    """
    return decode_user_image(read_picture(path), source=path, max_side=max_side, max_pixels=max_pixels)


def read_picture(path: str | os.PathLike[str]) -> bytes:
    """A picture file's bytes: a regular file of at most :data:`~digitlab.data.imagetree.MAX_FILE_BYTES`."""
    return files.read_file(path, limit=MAX_FILE_BYTES)


# Ancillary PNG chunks that change nothing in how :func:`to_greyscale` reads a grey
# picture. Others may: an eXIf chunk, or a text chunk holding a raw EXIF profile, can
# turn the picture (its orientation); a chunk this list does not know might too.
_NEUTRAL_PNG_CHUNKS = frozenset(
    {b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"tIME", b"tRNS"}
)


def plain_grey_png(data: bytes) -> tuple[tuple[int, int], bytes] | None:
    """``((h, w), filtered scanlines)`` of a picture that :func:`decode_grey_pngs` decodes
    exactly as :func:`decode_user_image` would: a plain 8-bit grey PNG (no colour, no
    interlacing, every chunk checked) with no chunk that changes its reading; else None.

    Pillow spends about 100 us of Python on each small PNG; a batch of these is
    unfiltered by NumPy at once (:func:`~digitlab.data.imagetree.unfilter_png_rows`).
    A grey picture's transparency is ignored by :func:`to_greyscale`, so tRNS may stay.
    """
    size = plain_png_size(data)
    if size is None or size[0] * size[1] > MAX_PIXELS:
        return None
    rows = plain_png_rows(data, *size, ancillary=_NEUTRAL_PNG_CHUNKS)
    return None if rows is None else (size, rows)


def decode_grey_pngs(shape: tuple[int, ...], rows: list[bytes]) -> np.ndarray:
    """uint8 ``(n, h, w)`` of :func:`plain_grey_png` scanlines of ``shape`` pictures, in one go."""
    h, w = shape
    filtered = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), h, w + 1)
    return unfilter_png_rows(filtered)


def decode_user_image(
    data: bytes,
    *,
    source: str | os.PathLike[str] = "image",
    max_side: int | None = None,
    max_pixels: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Decode one picture's bytes safely into uint8 ``(h, w)`` greyscale (see :func:`to_greyscale`).

    Pictures with more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
    (decompression bombs), truncated or corrupt data and non-images raise a
    :class:`~digitlab.errors.DataError` naming ``source``.

    Parameters
    ----------
    data : bytes
        The encoded picture (PNG, JPEG, ...).
    source : str or path-like
        Named in errors: the file, or "upload" for a web request.
    max_side : int, optional
        Let JPEGs decode at a reduced scale (1/2, 1/4 or 1/8, done inside the
        decoder, so much faster) as long as both sides stay at least this long,
        or further if that is needed to fit ``max_pixels``. Other formats are
        always decoded in full.
    max_pixels : int, optional
        A tighter limit than Pillow's on width x height, checked from the
        header before any pixel is decoded: a small PNG of huge dimensions
        must not claim gigabytes. A JPEG counts at the reduced scale
        ``max_side`` lets it decode at.
    formats : tuple of str, optional
        Pillow format names to accept (``("PNG", "JPEG")``); by default any
        format Pillow reads.
    """
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)  # reads the header only
            if max_side is not None and image.format == "JPEG":
                _draft_jpeg(image, max_side, max_pixels)  # sets the size it will decode at
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise DataError(source, f"refusing a {image.width}x{image.height} image: more than "
                                f"{max_pixels:,} pixels (a decompression bomb?)")
            image.load()
    except DataError:
        raise  # ours, from the size check above: already says what is wrong
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(source, f"refusing a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        damage = damaged_header(data, formats)
        if damage is not None:  # claims a format it then breaks: say so, not "not an image"
            raise DataError(source, damage) from None
        wanted = "an image file" if formats is None else "a " + " or ".join(formats) + " image"
        raise DataError(source, f"not {wanted} (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise DataError(source, f"truncated or corrupt image ({exc})") from None
    return to_greyscale(image, source)


def _draft_jpeg(image: Image.Image, max_side: int, max_pixels: int | None) -> None:
    """Have a JPEG decode at the smallest reduction that keeps both sides >= ``max_side``,
    but at least at the one that brings it within ``max_pixels``.

    A 20-megapixel camera photo (5184 x 3888) cannot halve within 2048 px a
    side, yet must not be refused: it decodes at 2592 x 1944, plenty for a
    digit. Pillow honours one draft per image, so both limits go into one
    request; it picks the largest of 1/8, 1/4, 1/2 that keeps the size asked.
    """
    width, height = image.size
    scale = 1
    while (
        max_pixels is not None
        and scale < 8
        and -(-width // scale) * -(-height // scale) > max_pixels  # sides round up
    ):
        scale *= 2
    image.draft(None, (max(1, min(max_side, width // scale)), max(1, min(max_side, height // scale))))


# ---------------------------------------------------------------- normalising a digit


def _grey_float(image: np.ndarray | Image.Image, source: str | os.PathLike[str]) -> np.ndarray:
    """Any accepted input as float32 ``(h, w)`` greyscale 0..255."""
    if isinstance(image, Image.Image):
        return to_greyscale(image, source).astype(np.float32)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return to_greyscale(
            Image.fromarray(as_uint8_images(array, os.fspath(source))), source
        ).astype(np.float32)
    if array.ndim != 2:
        raise DataError(
            source,
            f"expected a greyscale (h, w) or colour (h, w, 3|4) image, got shape {array.shape}",
        )
    if min(array.shape) < 1:
        raise DataError(source, "the image is empty")
    return as_uint8_images(array, os.fspath(source)).astype(np.float32)


def _block_mean(grey: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks (the remainder rows/columns are dropped)."""
    h, w = (grey.shape[0] // factor) * factor, (grey.shape[1] // factor) * factor
    return grey[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _median(values: np.ndarray) -> np.floating:
    """``np.median(values)`` of finite values, the same number in the same dtype.

    np.median's generic machinery costs ~9 us a call, most of a 28x28 picture's
    statistics (five medians each); one partition and the same mean of the middle
    two (in the values' dtype) cost under 2.
    """
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return np.partition(flat, half)[half]
    part = np.partition(flat, (half - 1, half))
    return (part[half - 1] + part[half]) / 2


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """``scipy.ndimage.center_of_mass(image)`` of a 2-D image, the same sums without its
    generic (labels, any dimension) machinery: 14 us of a 28x28 picture's 50 in placing it."""
    total = image.sum()
    rows = np.arange(image.shape[0], dtype=float)[:, None]  # (h, 1), as ndimage's ogrid
    cols = np.arange(image.shape[1], dtype=float)[None, :]  # (1, w)
    return float((image * rows).sum() / total), float((image * cols).sum() / total)


def _border(grey: np.ndarray) -> np.ndarray:
    """The pixels of a frame ~2% of the shorter side wide (at least one pixel)."""
    b = max(1, round(0.02 * min(grey.shape)))
    mask = np.ones(grey.shape, dtype=bool)
    mask[b:-b, b:-b] = False
    return grey[mask]


def _is_light_background(grey: np.ndarray, paper: np.ndarray) -> bool:
    """Is the paper lighter than the ink?

    ``paper`` is the fitted paper level (:func:`_background`). The ink is on
    whichever side of it the picture deviates clearly more (at least twice as
    much), counting only deviations beyond a margin (three robust standard deviations of the border, at least
    8 levels) so that paper grain and shading do not vote. Sparse ink -- a
    thin stroke on a big page -- still wins, since paper pixels add nothing.
    """
    residual = grey - paper  # (h, w)
    border = _border(residual)
    margin = max(8.0, 3.0 * 1.4826 * float(_median(np.abs(border - _median(border)))))
    darker = float(np.maximum(-residual - margin, 0.0).sum())  # np.clip(x, 0, None), without its
    brighter = float(np.maximum(residual - margin, 0.0).sum())  # argument checks (which call this)
    if max(darker, brighter) <= 2.0 * min(darker, brighter):
        # Nothing clearly stands out (a blank page, grain): the paper's own level decides.
        return float(_median(paper)) > 127.5
    return darker > brighter


def _thin(image: np.ndarray, target: int = 256) -> np.ndarray:
    """Every k-th row and column, leaving about ``target`` of each: cheap statistics."""
    return image[:: max(1, image.shape[0] // target), :: max(1, image.shape[1] // target)]


def _background(grey: np.ndarray) -> np.ndarray:
    """A smooth estimate of the paper (background) level under the ink, float32 (h, w).

    Phone photos are lit unevenly (a gradient from the window, a darker
    corner), so the paper level is modelled as a quadratic surface in x and y,
    fitted by least squares to a grid of at most ~10,000 pixels. It starts
    flat at the border's median and is refitted five times to the pixels
    within 3 robust standard deviations of the current fit, which drops the
    ink -- darker or brighter than the paper, whichever it is -- and keeps
    the paper. Pictures under ``SHADING_MIN_SIDE`` pixels keep the flat level.
    """
    h, w = grey.shape
    step = max(1, math.ceil(math.sqrt(h * w / 10_000)))
    if min(h, w) < SHADING_MIN_SIDE:
        # No surface is fitted: the flat start below, without building the fit's grid
        # (most of the time of a 28x28 picture; equal to the surface with zero slopes).
        return np.full((h, w), _flat_paper_level(grey[::step, ::step]), dtype=np.float32)
    return _paper_surface(_paper_fit(grey), h, w)


@functools.lru_cache(maxsize=64)  # a server sees one canvas size: ~150 us saved a picture
def _fit_grid(h: int, w: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_paper_fit`'s sample grid of an ``(h, w)`` picture: the design matrix, columns
    1, x, y, x^2, xy, y^2 for each sampled pixel (m, 6), and which pixels are on its frame (m,)."""
    ys, xs = _unit_axis(h), _unit_axis(w)
    gy, gx = np.meshgrid(ys[::step], xs[::step], indexing="ij")  # the sample grid
    design = np.stack([np.ones_like(gx), gx, gy, gx * gx, gx * gy, gy * gy], axis=-1).reshape(-1, 6)
    on_frame = np.zeros(gy.shape, dtype=bool)
    on_frame[[0, -1], :] = on_frame[:, [0, -1]] = True
    return _read_only(design), _read_only(on_frame.ravel())


@functools.lru_cache(maxsize=64)  # three per canvas drawing, ~6 us each
def _unit_axis(n: int) -> np.ndarray:
    """Pixel positions along a side of ``n`` pixels mapped onto [-1, 1] (float64 (n,))."""
    return _read_only(np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1))


def _paper_fit(grey: np.ndarray, *, settle: bool = True) -> np.ndarray:
    """:func:`_background`'s quadratic paper surface: its six coefficients (1, x, y, x^2,
    xy, y^2 on [-1, 1]), float32 (6,). The picture is at least ``SHADING_MIN_SIDE`` a side.

    ``settle``: stop refitting once the pixels taken as paper no longer change -- every
    later round would repeat the last one exactly -- rather than always fitting five times.
    """
    h, w = grey.shape
    step = max(1, math.ceil(math.sqrt(h * w / 10_000)))
    design, frame = _fit_grid(h, w, step)
    values = grey[::step, ::step].astype(np.float64).ravel()

    # Start flat, at the frame's median; the first "paper" is whatever is close to it.
    border = values[frame]
    coef = np.array([_median(border), 0, 0, 0, 0, 0], dtype=np.float64)
    use = np.abs(values - coef[0]) < _paper_margin(border, coef[0])
    if min(h, w) >= SHADING_MIN_SIDE:
        for _ in range(5):
            if np.count_nonzero(use) < 12:  # too few paper pixels for a surface: keep the last fit
                break
            a = np.compress(use, design, axis=0)  # design[use], 4x faster; normal equations: 6 unknowns, well conditioned on [-1, 1]
            coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ values[use])
            residual = values - design @ coef
            paper = np.abs(residual) < _paper_margin(residual[use], 0.0)
            if settle and np.array_equal(paper, use):
                break
            use = paper
    return coef.astype(np.float32)


def _paper_margin(values: np.ndarray, near: float) -> float:
    """How far from the paper level :func:`_paper_fit` still takes a pixel as paper: three
    robust standard deviations (1.4826 MADs) of ``values`` (its paper pixels' residuals),
    but at least 2 levels. ``near``: where most ``values`` are expected (any level will do).

    On a canvas drawing most values are within a hair of ``near`` (0 on the black canvas,
    0 in the fit's residuals), and then the margin is 2 without sorting anything: when
    more than half of them lie within 0.2 of ``near``, so does their median, so more than
    half of the deviations from it are at most 0.4 (plus rounding), and so is their median,
    the MAD; 3 x 1.4826 x 0.4 = 1.78 < 2. Two medians of ~7,000 values were a third of
    a 280x280 drawing's normalisation.
    """
    if np.count_nonzero(np.abs(values - near) <= 0.2) > values.size // 2:
        return 2.0
    spread = 1.4826 * float(_median(np.abs(values - _median(values))))
    return max(3.0 * spread, 2.0)


def _paper_surface(
    coef: np.ndarray, h: int, w: int, rows: slice = slice(None), cols: slice = slice(None)
) -> np.ndarray:
    """The paper surface of :func:`_paper_fit`'s ``coef`` over an ``(h, w)`` picture, float32;
    only its ``rows`` x ``cols`` window if given (the same numbers, pixel for pixel)."""
    c0, c1, c2, c3, c4, c5 = coef
    y = _unit_axis(h).astype(np.float32)[rows, None]
    x = _unit_axis(w).astype(np.float32)[None, cols]
    by_row = c0 + c2 * y + c5 * y * y  # (h, 1): broadcast, no (h, w, 6) basis needed
    by_col = c1 * x + c3 * x * x  # (1, w)
    return (by_row + by_col) + (c4 * y) * x  # (h, w) float32


def _flat_paper_level(grid: np.ndarray) -> np.float32:
    """:func:`_background`'s flat start: the median of the sample ``grid``'s frame."""
    on_frame = np.zeros(grid.shape, dtype=bool)
    on_frame[[0, -1], :] = on_frame[:, [0, -1]] = True
    return np.float32(_median(grid[on_frame].astype(np.float64)))


def _otsu(hist: np.ndarray) -> float:
    """Otsu's threshold for a 256-bin histogram of values 0..1 (bin k holds k/255).

    The cut maximising the between-class variance; a value ``t`` with ink
    being ``>= t``.
    """
    p = hist / max(hist.sum(), 1)
    levels = np.arange(len(hist)) / (len(hist) - 1)
    w0 = np.cumsum(p)  # weight of the class at or below each cut
    m0 = np.cumsum(p * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    return float(int(np.argmax(between)) + 1) / (len(hist) - 1)


def _ink_map(grey: np.ndarray, source: str | os.PathLike[str], invert: bool | None) -> np.ndarray:
    """Greyscale picture -> float32 ink in [0, 1] (paper 0), specks removed; DataError if blank.

    For a drawing on a black canvas, only a window of it holding all of its ink: all
    that :func:`_fit_in_box` looks at.
    """
    canvas = _canvas_ink_map(grey, source, invert)
    if canvas is not None:  # a drawing on a black canvas: the same numbers, from its ink alone
        return canvas
    paper = _background(grey)
    light = _is_light_background(grey, paper) if invert is None else invert
    # Turn the picture so that ink is brighter than paper.
    up, paper = (255.0 - grey, 255.0 - paper) if light else (grey, paper)
    # Ink as a fraction of the headroom above the paper. For dark-on-light this
    # is 1 - grey / paper_brightness: shading scales paper and ink alike, so
    # dividing by the local paper level undoes uneven lighting.
    signed = (up - paper) / np.maximum(255.0 - paper, 1.0)  # (h, w), paper ~ 0
    ink = np.clip(signed, 0.0, 1.0)

    # One 256-level histogram of the whole picture gives Otsu's threshold and
    # the typical ink level (median of the pixels above it) without sorting.
    hist = np.bincount(np.rint(ink * 255).astype(np.int32).ravel(), minlength=256)
    threshold = _otsu(hist)
    above = hist.copy()
    above[: math.ceil(threshold * 255)] = 0
    cumulative = np.cumsum(above)
    level = float(np.searchsorted(cumulative, cumulative[-1] / 2)) / 255 if cumulative[-1] else 0.0
    # Paper noise: robust spread of the unclipped values below the threshold
    # (from a strided sample). Unclipped, so that noise below the paper counts.
    sample = _thin(signed)
    paper_side = sample[sample < threshold]
    noise = 0.0
    if paper_side.size:
        noise = 1.4826 * float(_median(np.abs(paper_side - _median(paper_side))))
    if level < max(MIN_CONTRAST, 6.0 * noise):
        raise DataError(source, "no digit found: the image is blank")
    return _keep_digit(ink, threshold, noise, level)


# A canvas drawing's fitted paper surface stays within this of 0 (measured on the
# sample's digits drawn at 280x280: under 0.27, faint ones included): its paper pixels
# then all round to histogram level 0 and stay under the noise floor (both hold up to
# ~0.49), which the fast path below relies on.
CANVAS_PAPER = 0.45


def _canvas_ink_map(
    grey: np.ndarray, source: str | os.PathLike[str], invert: bool | None
) -> np.ndarray | None:
    """:func:`_ink_map` of a drawing on a black canvas, the same numbers bit for bit in
    the window of the picture that holds its ink (outside it there is none), or None when
    ``grey`` is not one (then the general path runs).

    A canvas is light ink on paper exactly 0: the draw-a-digit page sends 280x280 of
    them, ~8 ms each through the general path, mostly whole-picture statistics whose
    result is known when most pixels are 0. If more than half the pixels are exactly 0
    and the fitted paper surface stays within ``CANVAS_PAPER`` of 0:

    - the ink is brighter than the paper (the surface is far below the 8-level margin
      of :func:`_is_light_background`, so no pixel is darker than it);
    - every 0 pixel falls in histogram level 0, so the histogram (Otsu's threshold,
      the typical ink) needs only the other pixels counted;
    - the noise (a MAD of the values below the threshold, over half of them 0 pixels
      within ``e`` of 0) is at most ``2e``, far below the 0.0125 from which it would
      change the noise floor or the blank test: its exact value is not needed;
    - a 0 pixel is under the noise floor (>= 1/510), so labelling the box suffices.

    Everything else is the general path's own arithmetic on the box, pixel for pixel.
    """
    h, w = grey.shape
    if invert or min(h, w) < SHADING_MIN_SIDE:
        return None
    drawn = grey != 0  # the tests below are faster on this than on the float picture
    sample = _thin(drawn)  # the pixels _ink_map's noise is measured on
    if np.count_nonzero(sample) >= sample.size / 2:  # the 0 pixels must be the majority
        return None
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:  # blank: the general path says so
        return None
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    if grey[box].min() < 0:  # not a picture's levels (0..255): no pixel may be below the paper
        return None
    coef = _paper_fit(grey)
    if _surface_peak(coef, h) > CANVAS_PAPER:
        return None
    paper = _paper_surface(coef, h, w, *box)
    # _ink_map's arithmetic (light is False), on the box only.
    signed = (grey[box] - paper) / np.maximum(255.0 - paper, 1.0)
    ink = np.clip(signed, 0.0, 1.0)
    drawn_ink = ink[drawn[box]]  # the pixels not 0: the rest are in level 0 (see above)
    hist = np.bincount(np.rint(drawn_ink * 255).astype(np.int32), minlength=256)
    hist[0] += h * w - drawn_ink.size
    threshold = _otsu(hist)
    above = hist.copy()
    above[: math.ceil(threshold * 255)] = 0
    cumulative = np.cumsum(above)
    level = float(np.searchsorted(cumulative, cumulative[-1] / 2)) / 255 if cumulative[-1] else 0.0
    if level < MIN_CONTRAST:  # the noise is under MIN_CONTRAST / 6 (see above)
        raise DataError(source, "no digit found: the image is blank")
    # Noise 0 gives the same floor as any noise under 0.0125.
    return _keep_digit(ink, threshold, 0.0, level, (int(rows[0]), int(cols[0]), h, w))


def _surface_peak(coef: np.ndarray, h: int) -> float:
    """The largest ``|surface|`` of :func:`_paper_fit`'s ``coef`` on any of ``h`` rows and any
    ``x`` in [-1, 1] (an upper bound over the picture's pixels, with float32's rounding)."""
    c0, c1, c2, c3, c4, c5 = coef.astype(np.float64)
    y = _unit_axis(h)
    # Along a row the surface is a + b x + c3 x^2: its extremes are at x = +-1 or the vertex.
    a, b = c0 + c2 * y + c5 * y * y, c1 + c4 * y  # (h,)
    vertex = np.clip(-b / (2 * c3), -1.0, 1.0) if c3 else np.zeros(h)
    values = [a + b * x + c3 * x * x for x in (-1.0, 1.0, vertex)]
    return float(np.abs(values).max()) + 1e-4


def _keep_digit(
    ink: np.ndarray, threshold: float, noise: float, level: float,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """:func:`_ink_map`'s last steps: ink (float32 ``(h, w)``, paper 0) -> the digit's ink,
    specks and scene edges dropped, stretched so typical ink (``level``) is 1.

    ``window``: ``ink`` is the window ``(top, left, height, width)`` of a bigger picture
    holding all of its ink (what "the picture's edge" means for :func:`_edge_regions`).
    """
    # Hysteresis: faint pixels (above the noise floor) count as ink only if they
    # touch a strong one, which keeps anti-aliased edges and drops paper grain.
    floor = min(max(4.0 * noise, 0.05), threshold / 2)
    faint = ink > floor
    # 16-bit labels when they are sure to fit (there is at most one component in each
    # 2x2 block of pixels): the labelling, most of the time here, takes 15% less.
    small = math.ceil(ink.shape[0] / 2) * math.ceil(ink.shape[1] / 2) < 2**16
    labels, count = ndimage.label(faint, structure=np.ones((3, 3)),
                                  output=np.uint16 if small else np.int32)
    # Stretch so that typical ink is 1 and the noise floor 0.
    stretched = np.clip((ink - floor) / max(level - floor, 1e-6), 0.0, 1.0)
    if count == 1:  # one stroke (most drawings): it is kept whatever its mass, as the largest
        np.copyto(stretched, np.float32(0.0), where=~faint)  # np.where's numbers, half the time
        return stretched.astype(np.float32, copy=False)
    strong = ink >= threshold
    has_strong = np.bincount(labels[strong], minlength=count + 1)[1:] > 0  # (count,)
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)[1:]
    mass = np.where(has_strong, mass, 0.0)
    # A solid region at the picture's edge -- the table beside the page, a
    # shadow -- is not ink: ignore such regions when there is other ink.
    edge = _edge_regions(labels, count, window)
    if mass[~edge].sum() >= 0.01 * mass.sum():
        mass = np.where(edge, 0.0, mass)
    # Isolated specks -- components with under 2% of the ink -- are dust, not digit.
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = mass >= 0.02 * mass.sum()
    keep[1 + int(np.argmax(mass))] = True
    return np.where(keep[labels], stretched, np.float32(0.0)).astype(np.float32)


def _edge_regions(
    labels: np.ndarray, count: int, window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Which components (1..count, as a bool (count,)) look like the edge of the scene, not ink.

    Such a region touches the picture's edge, covers at least 5% of the
    picture with its bounding box, and fills more than 60% of that box:
    pen strokes fill far less of theirs, even a digit cropped tightly.
    """
    top, left, h, w = (0, 0, *labels.shape) if window is None else window
    edge = np.zeros(count, dtype=bool)
    bottom, right = top + labels.shape[0] == h, left + labels.shape[1] == w
    if not ((top == 0 and labels[0].any()) or (left == 0 and labels[:, 0].any())
            or (bottom and labels[-1].any()) or (right and labels[:, -1].any())):
        return edge  # no ink on the picture's edge: no region can touch it
    area = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        rows, cols = box
        touches = (top + rows.start == 0 or left + cols.start == 0
                   or top + rows.stop == h or left + cols.stop == w)
        box_area = (rows.stop - rows.start) * (cols.stop - cols.start)
        edge[index] = touches and box_area >= 0.05 * h * w and area[index] > 0.6 * box_area
    return edge


def _fit_in_box(
    ink: np.ndarray, size: tuple[int, int], box: int, centre: tuple[float, float] | None
) -> np.ndarray:
    """Crop ink to its bounding box, scale the longer side to ``box`` px, place it.

    Returns float ``size`` with the digit's centre of mass at ``centre``
    (rounded to whole pixels, as MNIST did), unless that would cut ink off:
    then it is moved just far enough to fit. ``centre=None`` centres the
    bounding box instead.
    """
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (ch, cw)
    ch, cw = crop.shape
    scale = box / max(ch, cw)
    # The longer side maps exactly onto `box` pixels; the shorter keeps the aspect ratio.
    ph, pw = min(box, math.ceil(ch * scale - 1e-9)), min(box, math.ceil(cw * scale - 1e-9))
    wy = _axis_weights(ch, ph, extent=ch * scale, edge="zero")  # (ph, ch)
    wx = _axis_weights(cw, pw, extent=cw * scale, edge="zero")  # (pw, cw)
    patch = wy @ crop @ wx.T  # (ph, pw), anti-aliased
    if centre is None:  # centre the box itself
        top, left = (size[0] - ph) // 2, (size[1] - pw) // 2
    else:
        com = _centre_of_mass(patch)
        top = min(max(round(centre[0] - com[0]), 0), size[0] - ph)  # whole pixels: no np.clip
        left = min(max(round(centre[1] - com[1]), 0), size[1] - pw)
    out = np.zeros(size, dtype=np.float64)
    out[top : top + ph, left : left + pw] = patch
    return out


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Stretch so the strongest ink is 255, and round."""
    peak = values.max()
    return (
        np.rint(values * (255.0 / peak)).astype(np.uint8) if peak > 0 else values.astype(np.uint8)
    )


def normalise_digit(
    image: np.ndarray | Image.Image,
    *,
    source: str | os.PathLike[str] = "image",
    invert: bool | None = None,
) -> np.ndarray:
    """MNIST-style normalisation of a user's picture of one digit.

    Steps (each robust to phone photos: any size, off-centre, unevenly lit):

    1. Greyscale (:func:`to_greyscale`: EXIF orientation, alpha onto white,
       luminance). Pictures larger than ``2 * WORK_SIDE`` are block-averaged.
    2. Fit a smooth (quadratic) paper level robustly, starting from the
       border, so uneven lighting is modelled rather than mistaken for ink.
    3. Invert when the paper is lighter than the ink (the picture deviates
       more to the dark side of the paper level), then measure ink against
       the paper: 1 - grey / paper for dark-on-light (undoing the shading),
       the rise above the background as a fraction of the headroom for
       light-on-dark.
    4. Separate ink from paper with Otsu's threshold; if the typical ink is
       not clearly above the paper (``MIN_CONTRAST``, six noise deviations),
       the image is blank. Faint pixels are kept only where they touch strong
       ones (hysteresis). Solid regions at the picture's edge (a table beside
       the page) are dropped when there is other ink, and so are components
       with under 2% of the ink (specks).
    5. Crop to the ink's bounding box; scale its longer side to 20 px keeping
       the aspect ratio, anti-aliased (area averaging, as MNIST did).
    6. Paste into 28x28 so that the centre of mass is at pixel (14, 14),
       rounded to whole pixels like MNIST, never cutting ink off.
    7. Stretch so the strongest ink is 255.

    Parameters
    ----------
    image : ndarray of shape (h, w) or (h, w, 3|4), or PIL.Image.Image
        uint8 greyscale or colour, or a PIL image of any mode.
    source : str or path-like
        Named in errors.
    invert : bool, optional
        Force (True) or forbid (False) treating the picture as dark-on-light;
        by default decided as in step 3.

    Returns
    -------
    ndarray of shape (28, 28), uint8
        0 background, 255 ink.

    Raises
    ------
    DataError
        ``"no digit found: the image is blank"`` when there is no ink.
    """
    return _to_uint8(
        _normalised(image, source, invert, (MNIST_SIZE, MNIST_SIZE), MNIST_BOX, MNIST_CENTRE)
    )


def _normalised(
    image: np.ndarray | Image.Image,
    source: str | os.PathLike[str],
    invert: bool | None,
    size: tuple[int, int],
    box: int,
    centre: tuple[float, float] | None,
) -> np.ndarray:
    grey = _grey_float(image, source)
    # Never a block taller or wider than the picture: a 1x1024 strip would average to nothing.
    factor = min(max(grey.shape) // WORK_SIDE, min(grey.shape))
    if factor >= 2:
        grey = _block_mean(grey, factor)
    if invert is not False:  # notebook paper's printed lines are not ink (drawings: untouched)
        grey = ink.clean_paper(grey)
    return _fit_in_box(_ink_map(grey, source, invert), size, box, centre)


def prepare_for_model(
    image: np.ndarray | Image.Image,
    shape: tuple[int, int] = (MNIST_SIZE, MNIST_SIZE),
    *,
    layout: Literal["mnist", "fill"] = "mnist",
    source: str | os.PathLike[str] = "image",
    invert: bool | None = None,
) -> np.ndarray:
    """A user's picture in a model's input form: uint8 ``shape``.

    ``layout="mnist"`` (MNIST-style data and its resized versions): :func:`normalise_digit` to 28x28, then :func:`resize_images`
    to ``shape`` -- exactly how ``--image-size 20`` data was made from MNIST.
    ``layout="fill"`` (scikit-learn's 8x8 digits, whose digits span the whole
    frame): the longer side fills ``shape`` and the bounding box is centred,
    as in the UCI bitmaps those digits were made from.
    """
    shape = _size_pair(shape)
    if layout == "mnist":
        digit = normalise_digit(image, source=source, invert=invert)
        return resize_images(digit[None], shape)[0]
    if layout == "fill":
        return _to_uint8(_normalised(image, source, invert, shape, min(shape), None))
    raise ValueError(f"layout must be 'mnist' or 'fill', got {layout!r}")


# ---------------------------------------------------------------- one preparation for all


PICTURE_MAX_SIDE = 2048
"""Pictures decode at a reduced scale (JPEG) down to this side: a digit needs no more."""


def layout_for(shape: tuple[int, ...] | list[int]) -> Literal["mnist", "fill"]:
    """The layout of :func:`prepare_for_model` for a model input of ``shape``.

    8x8 models were trained on scikit-learn's digits, which fill their frame;
    every other size is MNIST's layout (or a resized version of it).
    """
    return "fill" if tuple(shape) == (8, 8) else "mnist"


def normalise_to(
    image: np.ndarray | Image.Image, shape: tuple[int, int], *, source: str | os.PathLike[str]
) -> np.ndarray:
    """A picture normalised for a model input of ``shape`` (uint8): the one rule that
    ``digitlab predict``, ``serve`` and ``--normalise`` training data all go through."""
    return prepare_for_model(image, shape, layout=layout_for(shape), source=source)


def load_picture(path: str | os.PathLike[str]) -> np.ndarray:
    """A picture file read as ``digitlab predict`` reads it (uint8 greyscale ``(h, w)``)."""
    return load_user_image(path, max_side=PICTURE_MAX_SIDE)


def normalise_files(paths: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Each picture file read and normalised as ``digitlab predict`` does it: uint8 ``(n, *shape)``.

    Files may differ in size and polarity (dark ink on light paper or the
    reverse): each is decoded and normalised on its own.
    """
    files.check_size(paths[0] if paths else "images", len(paths) * shape[0] * shape[1],
                     files.MAX_DATA_BYTES, f"{len(paths):,} normalised images")
    out = np.empty((len(paths), *shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = normalise_to(load_picture(path), shape, source=path)
    return out


def normalise_images(
    images: np.ndarray, shape: tuple[int, int], *, source: str, what: str = "image"
) -> np.ndarray:
    """Every image of a uint8 stack ``(n, h, w)`` normalised by :func:`normalise_to`:
    uint8 ``(n, *shape)``. A blank image is named as ``source: <what> <index>``."""
    out = np.empty((len(images), *shape), dtype=np.uint8)
    for i, image in enumerate(images):
        try:
            out[i] = normalise_to(image, shape, source=source)
        except DataError as exc:  # say which image of the stack
            raise DataError(source, f"{what} {i}: {exc.problem}") from None
    return out


# ---------------------------------------------------------------- many small pictures at once


def stackable(shape: tuple[int, ...]) -> bool:
    """Whether pictures of ``shape`` can go through :func:`normalise_stack`: greyscale and
    smaller than ``SHADING_MIN_SIDE`` on a side (flat paper, no block averaging)."""
    return len(shape) == 2 and 1 <= min(shape) and max(shape) < SHADING_MIN_SIDE


def normalise_stack(images: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normalise_to` of every picture of a same-size uint8 stack ``(n, h, w)`` of
    small pictures (:func:`stackable`), with the same result, bit for bit.

    A 28x28 picture's normalisation is ~30 NumPy calls on 784 pixels, so calling
    overhead was most of its ~250 us: here the picture-wide statistics (paper level,
    polarity, Otsu's threshold, the typical ink, the noise) are each one call for the
    whole stack, and only the per-component steps (labelling, specks, the 20x20 box)
    still run one picture at a time.

    Returns
    -------
    out : ndarray of shape (n, *shape), uint8
    ok : ndarray of shape (n,), bool
        False for a blank picture (its row of ``out`` is zeros): :func:`normalise_to`
        of it raises the DataError that says so.
    """
    images = np.asarray(images)
    n, h, w = images.shape
    if images.dtype != np.uint8 or not stackable((h, w)):
        raise ValueError(f"expected uint8 (n, h, w) with sides under {SHADING_MIN_SIDE}, "
                         f"got {images.dtype} {images.shape}")
    grey = images.astype(np.float32)  # (n, h, w)
    frame = np.ones((h, w), dtype=bool)
    frame[1:-1, 1:-1] = False  # _background's flat level and _border's one-pixel frame alike
    # _flat_paper_level: the median of the frame, in float64, as float32.
    paper = _row_median(grey[:, frame].astype(np.float64)).astype(np.float32)  # (n,)

    # _is_light_background with a flat paper level.
    residual = (grey - paper[:, None, None]).reshape(n, h * w)  # (n, h*w) float32
    border = residual[:, frame.ravel()]  # (n, frame pixels)
    spread = _row_median(np.abs(border - _row_median(border)[:, None]))  # float32 MADs
    margin = np.maximum(8.0, 3.0 * 1.4826 * spread.astype(np.float64))  # (n,)
    margin32 = margin.astype(np.float32)[:, None]  # a Python float meets float32 as float32
    darker = np.maximum(-residual - margin32, np.float32(0.0)).sum(axis=1).astype(np.float64)
    brighter = np.maximum(residual - margin32, np.float32(0.0)).sum(axis=1).astype(np.float64)
    unclear = np.maximum(darker, brighter) <= 2.0 * np.minimum(darker, brighter)
    light = np.where(unclear, paper.astype(np.float64) > 127.5, darker > brighter)  # (n,)

    # _ink_map: turn so ink is brighter, measure it against the paper.
    flip = light[:, None, None]
    up = np.where(flip, np.float32(255.0) - grey, grey)
    level_paper = np.where(light, np.float32(255.0) - paper, paper)[:, None, None]  # (n, 1, 1)
    signed = (up - level_paper) / np.maximum(np.float32(255.0) - level_paper, np.float32(1.0))
    ink = np.clip(signed, np.float32(0.0), np.float32(1.0))  # (n, h, w) float32

    # One 256-bin histogram per picture: bincount of (picture, level) pairs.
    codes = np.rint(ink * 255).astype(np.int32).reshape(n, -1) + 256 * np.arange(n)[:, None]
    hist = np.bincount(codes.ravel(), minlength=256 * n).reshape(n, 256)
    thresholds = _row_otsu(hist)  # (n,) float64
    above = np.where(np.arange(256) >= np.ceil(thresholds * 255)[:, None], hist, 0)
    cumulative = np.cumsum(above, axis=1)  # (n, 256)
    total = cumulative[:, -1]
    # np.searchsorted(cumulative, total / 2) row by row: how many bins are below half.
    levels = np.where(total > 0, (cumulative < (total / 2)[:, None]).sum(axis=1) / 255, 0.0)

    # The noise: the robust spread of each picture's values below its threshold (_thin
    # keeps all of a small picture), a median of a varying subset: sorted with the rest
    # of the row pushed to the end as +inf, the subset's median is at its own middle.
    flat = signed.reshape(n, h * w)
    below = flat < thresholds.astype(np.float32)[:, None]
    counts = below.sum(axis=1)
    centre = _subset_median(flat, below, counts)  # (n,) float32
    spread = _subset_median(np.abs(flat - centre[:, None]), below, counts)
    noises = np.where(counts > 0, 1.4826 * spread.astype(np.float64), 0.0)
    ok = levels >= np.maximum(MIN_CONTRAST, 6.0 * noises)  # else blank: normalise_to says so
    floors = np.minimum(np.maximum(4.0 * noises, 0.05), thresholds / 2)  # (n,) as in _keep_digit
    digits = _keep_digits(ink[ok], thresholds[ok], floors[ok], levels[ok])  # (m, h, w)

    placed = _fit_stack(digits)  # (m, 28, 28) float64
    peaks = placed.max(axis=(1, 2), initial=0.0)  # _to_uint8, per picture
    stretch = np.divide(255.0, peaks, out=np.zeros_like(peaks), where=peaks > 0)
    placed = np.rint(placed * stretch[:, None, None]).astype(np.uint8)
    out = np.zeros((n, *shape), dtype=np.uint8)
    if shape == (MNIST_SIZE, MNIST_SIZE):
        out[ok] = placed
    else:  # one at a time, as normalise_to resizes each picture
        for i, digit in zip(np.flatnonzero(ok), placed, strict=True):
            out[i] = resize_images(digit[None], shape)[0]
    return out, ok


def _fit_stack(digits: np.ndarray) -> np.ndarray:
    """:func:`_fit_in_box` of each picture of a float32 stack ``(m, h, w)`` into MNIST's
    28x28 (20 px box, centre of mass at (14, 14)): the same numbers, float64
    ``(m, 28, 28)``, with pictures whose ink has the same bounding-box size cropped and
    scaled together (one matrix product per size)."""
    m, h, w = digits.shape
    out = np.zeros((m, MNIST_SIZE, MNIST_SIZE))
    if m == 0:
        return out
    rows, cols = np.any(digits, axis=2), np.any(digits, axis=1)  # (m, h), (m, w)
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    heights = h - rows[:, ::-1].argmax(axis=1) - top  # (m,) the ink's box
    widths = w - cols[:, ::-1].argmax(axis=1) - left
    sizes = heights * (w + 1) + widths  # one number per box size
    for key in np.unique(sizes):
        group = np.flatnonzero(sizes == key)
        ch, cw = int(heights[group[0]]), int(widths[group[0]])
        windows = np.lib.stride_tricks.sliding_window_view(digits, (ch, cw), axis=(1, 2))
        crops = windows[group, top[group], left[group]]  # (g, ch, cw)
        scale = MNIST_BOX / max(ch, cw)
        ph = min(MNIST_BOX, math.ceil(ch * scale - 1e-9))
        pw = min(MNIST_BOX, math.ceil(cw * scale - 1e-9))
        wy = _axis_weights(ch, ph, extent=ch * scale, edge="zero")  # (ph, ch)
        wx = _axis_weights(cw, pw, extent=cw * scale, edge="zero")  # (pw, cw)
        patches = wy @ crops @ wx.T  # (g, ph, pw)
        # _centre_of_mass of each patch, the same sums: each patch's ph * pw numbers in
        # one run, as the contiguous patch alone is summed.
        total = patches.sum(axis=(1, 2))
        com_y = (patches * np.arange(ph, dtype=float)[:, None]).sum(axis=(1, 2)) / total
        com_x = (patches * np.arange(pw, dtype=float)[None, :]).sum(axis=(1, 2)) / total
        # round() halves to even, as np.rint does
        y = np.clip(np.rint(MNIST_CENTRE[0] - com_y), 0, MNIST_SIZE - ph).astype(np.int64)
        x = np.clip(np.rint(MNIST_CENTRE[1] - com_x), 0, MNIST_SIZE - pw).astype(np.int64)
        rows_at = y[:, None, None] + np.arange(ph)[None, :, None]  # (g, ph, 1)
        cols_at = x[:, None, None] + np.arange(pw)[None, None, :]  # (g, 1, pw)
        out[group[:, None, None], rows_at, cols_at] = patches
    return out


def _keep_digits(
    ink: np.ndarray, thresholds: np.ndarray, floors: np.ndarray, levels: np.ndarray
) -> np.ndarray:
    """:func:`_keep_digit` of each picture of a float32 stack ``(n, h, w)``: the same
    numbers, with the labelling and the per-component sums done once for the stack."""
    n, h, w = ink.shape
    if n == 0:
        return ink
    # A Python float meets a float32 array as a float32 (NEP 50): so do these.
    strong = ink >= thresholds.astype(np.float32)[:, None, None]
    faint = ink > floors.astype(np.float32)[:, None, None]
    in_plane = np.zeros((3, 3, 3))
    in_plane[1] = 1  # 8-connected within a picture, never across pictures
    labels, count = ndimage.label(faint, structure=in_plane)  # numbered in raster order
    has_strong = np.bincount(labels[strong], minlength=count + 1)[1:] > 0  # (count,)
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)[1:]
    mass = np.where(has_strong, mass, 0.0)
    area = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    # Each component's picture and bounding box: (layer, top, bottom, left, right).
    boxes = np.array([(layer.start, rows.start, rows.stop, cols.start, cols.stop)
                      for layer, rows, cols in ndimage.find_objects(labels)],
                     dtype=np.int64).reshape(count, 5)
    picture, top, bottom, left, right = boxes.T
    # _edge_regions, per picture, for every component at once.
    touches = (top == 0) | (left == 0) | (bottom == h) | (right == w)
    box_area = (bottom - top) * (right - left)
    edge = touches & (box_area >= 0.05 * h * w) & (area > 0.6 * box_area)
    keep = np.zeros(count + 1, dtype=bool)
    starts = np.searchsorted(picture, np.arange(n + 1))  # components of picture i: starts[i:i+2]
    # A picture of one component (most drawings) keeps it, as _keep_digit's largest.
    alone = np.flatnonzero(np.diff(starts) == 1)
    keep[1 + starts[alone]] = True
    for i in np.flatnonzero(np.diff(starts) > 1).tolist():  # the sums as _keep_digit takes them: the same rounding
        lo, hi = starts[i], starts[i + 1]
        part = mass[lo:hi]
        if part[~edge[lo:hi]].sum() >= 0.01 * part.sum():
            part = np.where(edge[lo:hi], 0.0, part)
        keep[1 + lo : 1 + hi] = part >= 0.02 * part.sum()
        keep[1 + lo + int(np.argmax(part))] = True
    spans = np.maximum(levels - floors, 1e-6).astype(np.float32)[:, None, None]
    stretched = np.clip((ink - floors.astype(np.float32)[:, None, None]) / spans, 0.0, 1.0)
    return np.where(keep[labels], stretched, np.float32(0.0)).astype(np.float32)


def _subset_median(values: np.ndarray, chosen: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`_median` of ``values[i][chosen[i]]`` for each row ``i`` (float32 (n, k) values;
    rows with nothing chosen give 0)."""
    ordered = np.sort(np.where(chosen, values, np.float32(np.inf)), axis=1)
    rows = np.arange(len(values))
    upper = ordered[rows, counts // 2 * (counts > 0)]
    lower = ordered[rows, np.maximum(counts // 2 - 1, 0)]
    middle = np.where(counts % 2 == 1, upper, (lower + upper) / np.float32(2))
    return np.where(counts > 0, middle, np.float32(0.0))


def _row_median(values: np.ndarray) -> np.ndarray:
    """:func:`_median` of each row of a 2-D array: the same numbers in the same dtype."""
    half = values.shape[1] // 2
    if values.shape[1] % 2:
        return np.partition(values, half, axis=1)[:, half]
    part = np.partition(values, (half - 1, half), axis=1)
    return (part[:, half - 1] + part[:, half]) / 2


def _row_otsu(hist: np.ndarray) -> np.ndarray:
    """:func:`_otsu` of each row of ``hist`` (n, 256): the same thresholds."""
    p = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
    levels = np.arange(hist.shape[1]) / (hist.shape[1] - 1)
    w0 = np.cumsum(p, axis=1)
    m0 = np.cumsum(p * levels, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[:, -1:] * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    return (np.argmax(between, axis=1) + 1) / (hist.shape[1] - 1)
