"""Scores with a known error bound: the two products the guess-and-check engine races with.

The engine (:mod:`digitlab.models.guess_and_check_engine`) scores blocks of
training rows against many candidates at once and only needs, per row and
candidate, which side of 0 the plain loop's float64 ``w·x + b`` falls on. So a
product here gives scores in its own units together with a per-row tolerance
``T``: a score further than ``T`` from 0 has the float64 score's sign, and only
rows within ``T`` are unsure (the engine scores those again in float64).

- :class:`Float32Products`: float32 matrix products, for any features.
- :class:`PixelProducts`: for pixel features (``pixel / 255`` in float32, as
  ``Dataset.features`` makes them), exact integer products. Each weight is
  rounded to 16 bits and split into two int8 halves; both halves are multiplied
  by the pixels (minus 128, to fit int8) in one int8 matrix product
  (``torch._int_mm``, VNNI instructions on x86), which is exact in int32.
  On 2 AMD EPYC cores that is 3.7 ns per row and candidate for both halves
  together against float32's 15.5 ns, and the tolerance is a third of
  float32's. It needs torch; without it the engine uses float32.

Both have the same interface: ``l1`` (``|x|_1`` per row, an upper bound),
``tolerance`` (per row, float32, in the product's units), ``rows(index)``,
``empty(k)``, ``candidates(weights, biases, w_out, offset_out)``,
``take(w, index)`` (some candidates' weights; a view for a slice),
``scores(rows, w, offsets, out)``, ``single_threaded()`` and ``coarse()``
(cheaper products with a wider tolerance over the same candidates, or None).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

# float32 unit roundoff: every float32 operation is exact to a relative 2**-24.
_U32 = float(np.finfo(np.float32).eps) / 2
# Rows per step when preparing: temporaries of a few MB stay in the caches (a pass over
# 8,192 rows took 2.8x as long: 138 ms for Fashion-MNIST's 60,000 on one core, not 50).
_BLOCK_ROWS = 1024
# 16-bit weights: w ~ round(w * _STEPS / weight_range), split as 256 * high + low with
# both halves in int8: |high| <= 127 even if float32 rounding gives _STEPS + 1.
_STEPS = 32511
# |w * _STEPS / range - v| for v = rint of that product rounded to float32 (its error is
# 2**-24 relative, below _STEPS + 1), with room for float64's own rounding.
_ROUNDING = 0.5 + 2**-24 * (_STEPS + 1) + 1e-9
# int8 products of d features stay exact in int32 while 128 * 128 * d < 2**31.
_MAX_PIXEL_FEATURES = 2**31 // (128 * 128) - 1
# A fit imports torch for these products only when its search is long enough to repay
# the import (about 1 s): rows x candidates. Once torch is imported they are always used.
WORTH_IMPORTING_TORCH = 2e9
_PIXEL = np.float32(1 / 255)
# Below this many columns (candidates' halves) the int8 product runs the other way
# round, columns x rows: on one AMD EPYC core 7.9 against 10.6 ns a cell for 8 columns
# (the last few candidates of a race read thousands of rows each).
_THIN = 8


def _rounded_up(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) in float32, each rounded up rather than to nearest."""
    out = values.astype(np.float32)
    low = out < values
    out[low] = np.nextafter(out[low], np.float32(np.inf))
    return out


class Float32Products:
    """``w·x + b`` in float32, for any features; units are the score's own."""

    def __init__(self, X: np.ndarray, weight_range: float, bias_range: float) -> None:
        n, d = X.shape
        self.X = X
        self.l1 = np.empty(n)
        for start in range(0, n, _BLOCK_ROWS):
            block = X[start : start + _BLOCK_ROWS]
            self.l1[start : start + len(block)] = np.abs(block).sum(axis=1, dtype=np.float64)
        # |float32 score - exact score| <= gamma_(d+2) * (sum |x_k w_k| + |b|) for the
        # product and the bias add, plus 2**-24 relative for rounding w and b to
        # float32; sum |x_k w_k| <= weight_range * |x|_1. Twice that is safely above
        # the float64 loop's own error too.
        m = d + 3
        gamma = m * _U32 / (1 - m * _U32)
        tolerance = 2.0 * gamma * (1 + _U32) * (weight_range * self.l1 + bias_range) * (1 + 1e-6)
        self.tolerance = _rounded_up(tolerance)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The rows ``index``, one contiguous float32 copy."""
        return self.X[index]

    def empty(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.empty((k, self.X.shape[1]), np.float32), np.empty(k, np.float32)

    def candidates(
        self, weights: np.ndarray, biases: np.ndarray, w_out: np.ndarray, offset_out: np.ndarray
    ) -> None:
        """Write candidates (``weights`` (k, d), ``biases`` (k,), float64) in this product's form."""
        w_out[...] = weights
        offset_out[...] = biases

    def take(self, w: np.ndarray, index: np.ndarray | slice) -> np.ndarray:
        return w[index]

    def scores(
        self, rows: np.ndarray, w: np.ndarray, offsets: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """``rows @ w.T + offsets`` into ``out`` (rows, candidates)."""
        np.matmul(rows, w.T, out=out)  # w (k, d): BLAS reads it transposed, no copy
        out += offsets
        return out

    def single_threaded(self) -> AbstractContextManager[Any]:
        """One BLAS thread: the engine's own threads run the products side by side."""
        return threadpool_limits(limits=1, user_api="blas")

    def coarse(self) -> None:
        """No cheaper float32 products: the engine races once."""
        return None


class PixelProducts:
    """Exact integer products for pixel features; units are ``weight_range / (_STEPS * 255)``.

    With ``x = p / 255`` (``p`` the pixel, 0-255) and ``w ~ t * v`` (``t =
    weight_range / _STEPS``, ``v`` a 16-bit integer, ``v = 256 * high + low``):

        w·x + b ~ u * (high·q * 256 + low·q + 128 * sum(v)) + b,  q = p - 128, u = t / 255

    ``high·q`` and ``low·q`` come from one int8 product and are exact. The score
    in units is that bracket plus ``b / u`` (the candidate's offset), summed in
    float32. Use :meth:`for_features`, which says None when the features are
    not pixels or torch's int8 product is missing.
    """

    def __init__(self, Q: np.ndarray, pixel_sums: np.ndarray, weight_range: float,
                 bias_range: float) -> None:
        import torch

        self._torch = torch
        d = Q.shape[1]
        self.Q = Q
        self.pixel_sums = pixel_sums
        self.unit = weight_range / _STEPS / 255
        self.scale = _STEPS / weight_range  # weight -> 16-bit integer
        # |x|_1 <= sum(p) / 255 * (1 + 2**-21): each x is p * fl(1/255) rounded to float32.
        self.l1 = pixel_sums.astype(np.float64) / 255 * (1 + 2**-21)
        # Where the score in units differs from the float64 score (in score units):
        # - rounding w to t * v: at most t * _ROUNDING (about t / 2) per weight, so that
        #   times |x|_1;
        # - using p / 255 for x: |x - p/255| <= 2**-22 * p/255 per pixel, times |w| <= range;
        # - float32 in the sum (see scores): the offset rounded, H and L converted, then
        #   offset + 256 H and + L; with M = 32768 * 128 * d above |256 H|, |256 H + L|
        #   and |128 * sum(v)|, and B = |b| / u, the roundings are at most 2**-24 times
        #   (M + B) + 2 M / 128 + (2 M + B) + (2 M + B), below 6 (M + B).
        # Twice the sum is safely above the float64 loop's own error too.
        t = weight_range / _STEPS
        big = 32768.0 * 128 * d + bias_range / self.unit
        float32_sum = 6 * _U32 * big * self.unit
        bound = t * _ROUNDING * self.l1 + weight_range * (1 + 1 / _STEPS) * 2**-22 * self.l1
        tolerance = 2.0 * (bound + float32_sum) * (1 + 1e-6)
        self.tolerance = _rounded_up(tolerance / self.unit)

    @classmethod
    def for_features(
        cls, X: np.ndarray, weight_range: float, bias_range: float, *, work: float, workers: int = 1
    ) -> PixelProducts | None:
        """Pixel products for ``X``, or None when they do not apply.

        None when ``X`` is not float32 ``pixel / 255`` (pixel 0-255), has too many
        features for int32, torch is not importable or has no int8 product, or
        torch is not imported yet and ``work`` (rows x candidates) is below
        :data:`WORTH_IMPORTING_TORCH`.
        """
        n, d = X.shape
        if X.dtype != np.float32 or not 0 < d <= _MAX_PIXEL_FEATURES or n == 0:
            return None
        if not _pixels(X[:64], np.empty((min(n, 64), d), np.int8), np.empty(min(n, 64))):
            return None  # a quick look first: most other features fail on the first rows
        if not _torch_worth_it(work) or not _int_mm_works():
            return None
        Q = np.empty((n, d), np.int8)
        sums = np.empty(n)
        starts = range(0, n, _BLOCK_ROWS)

        def prepare(start: int) -> bool:
            end = min(start + _BLOCK_ROWS, n)
            return _pixels(X[start:end], Q[start:end], sums[start:end])

        if workers > 1 and n > _BLOCK_ROWS:  # numpy releases the GIL: both cores convert
            with ThreadPoolExecutor(workers) as pool:
                ok = all(pool.map(prepare, starts))
        else:
            ok = all(prepare(start) for start in starts)
        return cls(Q, sums, weight_range, bias_range) if ok else None

    def rows(self, index: np.ndarray) -> Any:
        """The rows ``index`` as an int8 torch tensor (one contiguous copy)."""
        return self._torch.from_numpy(self.Q[index])

    def empty(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        # (2, k, d): every candidate's high half, then every low half. As a (2 k, d)
        # matrix, its product's columns are H for all, then L for all: the sum reads two
        # contiguous halves (alternating columns took 3x as long).
        # Offsets (k, 2): for the high halves alone (HighHalves), for both.
        return np.empty((2, k, self.Q.shape[1]), np.int8), np.empty((k, 2), np.float32)

    def take(self, w: np.ndarray, index: np.ndarray | slice) -> np.ndarray:
        return w[:, index]

    def candidates(
        self, weights: np.ndarray, biases: np.ndarray, w_out: np.ndarray, offset_out: np.ndarray
    ) -> None:
        # In float32 and int16: a third of the time of float64 and int32 here.
        scaled = np.multiply(weights, self.scale, dtype=np.float32)
        v = np.rint(scaled, out=scaled).astype(np.int16)  # |v| <= _STEPS + 1
        high = (v + 128) >> 8  # floor: low = v - 256 * high is in [-128, 127]
        w_out[0] = high
        in_units = biases / self.unit
        offset_out[:, 0] = 32768.0 * high.sum(axis=1, dtype=np.int64) + in_units  # 128 * 256 high
        offset_out[:, 1] = 128.0 * v.sum(axis=1, dtype=np.int64) + in_units
        high <<= 8
        w_out[1] = v - high

    def scores(self, rows: Any, w: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> np.ndarray:
        k = w.shape[1]
        halves = _int8_product(self._torch, rows, w.reshape(2 * k, -1))  # H for all, then L
        scores = self._torch.from_numpy(out)
        # In float32: offset + 256 H (H converted exactly below 2**24), then + L.
        self._torch.add(self._torch.from_numpy(offsets[:, 1]), halves[:, :k], alpha=256,
                        out=scores)
        scores.add_(halves[:, k:])
        return out

    def coarse(self) -> HighHalves:
        """The same scores from the high halves alone: one int8 product, a wider tolerance."""
        return HighHalves(self)

    def single_threaded(self) -> AbstractContextManager[Any]:
        return _TorchThreads(self._torch, 1)


class HighHalves:
    """:class:`PixelProducts` without the low halves: half the products, a wider tolerance.

    The score in units is ``256 H + 128 * 256 * sum(high) + b / u``; what it
    leaves out is ``sum(low * p)`` (``L + 128 * sum(low)``), and ``|low| <= 128``,
    so the tolerance grows by ``128 * sum(p)`` (about 0.9 of a score on a
    Fashion-MNIST image, against 0.007 for both halves). The engine races with it
    first, to drop most candidates at half the cost.
    """

    def __init__(self, full: PixelProducts) -> None:
        self._torch = full._torch
        self.l1 = full.l1
        wider = full.tolerance.astype(np.float64) + 128.0 * full.pixel_sums * (1 + 1e-6)
        self.tolerance = _rounded_up(wider)
        self.rows, self.empty, self.candidates = full.rows, full.empty, full.candidates
        self.take, self.single_threaded = full.take, full.single_threaded

    def scores(self, rows: Any, w: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> np.ndarray:
        high = _int8_product(self._torch, rows, w[0])
        self._torch.add(self._torch.from_numpy(offsets[:, 0]), high, alpha=256,
                        out=self._torch.from_numpy(out))
        return out


def _int8_product(torch: Any, rows: Any, w: np.ndarray) -> Any:
    """``rows @ w.T`` (int8 rows, int8 ``w`` (n, d)), exact in int32, shape (rows, n).

    Below ``_THIN`` columns it is computed the other way round (``w @ rows.T``,
    returned transposed: a view), which is faster for a race's thin tails.
    """
    weights = torch.from_numpy(w)
    if len(w) < _THIN:
        return torch._int_mm(weights, rows.t()).t()
    return torch._int_mm(rows, weights.t())


def _pixels(x: np.ndarray, q_out: np.ndarray, sums_out: np.ndarray) -> bool:
    """Whether every ``x`` is ``p * fl(1/255)`` in float32 for a pixel ``p`` in 0-255.

    Writes ``p - 128`` (int8) into ``q_out`` and each row's sum of ``p`` into
    ``sums_out`` (the caller uses them only when the answer is True).
    """
    p = np.multiply(x, np.float32(255))
    np.rint(p, out=p)
    # Out of range or NaN, the uint8 is some other number: x is then not rebuilt from it.
    with np.errstate(invalid="ignore"):
        pixels = p.astype(np.uint8)
    if not np.array_equal(np.multiply(pixels, _PIXEL, dtype=np.float32), x):
        return False
    np.bitwise_xor(pixels, np.uint8(128), out=q_out.view(np.uint8))  # p - 128 as int8
    sums_out[...] = p.sum(axis=1)  # whole numbers below 2**24: exact in float32
    return True


def _torch_worth_it(work: float) -> bool:
    """torch is imported already, or importable and ``work`` repays importing it."""
    if "torch" in sys.modules:
        return True
    import importlib.util

    return work >= WORTH_IMPORTING_TORCH and importlib.util.find_spec("torch") is not None


def _int_mm_works() -> bool:
    """torch has an exact int8 matrix product on the CPU (``torch._int_mm``, torch >= 2.2)."""
    import torch

    try:
        a = torch.tensor([[127, -128, 3]], dtype=torch.int8)
        b = torch.tensor([[-128, 127, 5], [1, 2, 3]], dtype=torch.int8).t()
        got = torch._int_mm(a, b).tolist()
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return got == [[127 * -128 - 128 * 127 + 15, 127 - 256 + 9]]


class _TorchThreads:
    """torch's intra-op threads set for the duration of a ``with`` block."""

    def __init__(self, torch: Any, threads: int) -> None:
        self.torch, self.threads, self.before = torch, threads, 0

    def __enter__(self) -> _TorchThreads:
        self.before = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        self.torch.set_num_threads(self.before)
