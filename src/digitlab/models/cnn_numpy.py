"""The CNN's forward pass in NumPy: predictions from a CNN model file without PyTorch.

:class:`NumpyCNN` runs the network of :func:`digitlab.models.cnn.build_network`
from its ``state_dict`` arrays (``net.<layer>.<name>``), in float32::

    x (n, s, s, 1)                                         channels last
      -> conv3x3 (im2col: one matmul) -> maxpool2 -> BN -> ReLU   (n, s/2, s/2, w)
      -> conv3x3 (im2col: one matmul) -> maxpool2 -> BN -> ReLU   (n, s/4, s/4, 2w)
      (with ``convs`` > 1, each block first has ``convs - 1`` times conv3x3 -> BN -> ReLU)
      -> flatten -> dense -> ReLU -> dense                        (n, n_classes)

Batch norm (eval mode: ``a * v + b`` per channel, ``a = gamma / sqrt(var + eps)``)
is folded into the convolution before it. The net pools *between* the
convolution and the BN, and max-pooling commutes with ``v -> |a| v`` (a
positive scale) but not with a negative one (it would turn the max into a
min): so ``|a|`` goes into the convolution's weights, and the sign and the
shift ``b`` are applied after the pool (``sign * pooled + b``), exact for
every sign. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import ThreadpoolController

# Rows per forward pass: bounds the im2col copies (128 images of 28x28: 14 MB for the
# second convolution's windows) and keeps them in cache.
BATCH = 128
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default eps, which build_network keeps


def pooled_sizes(side: int) -> list[tuple[int, bool]]:
    """For each of the two blocks: the map's side after it and whether it pools (the
    rule of ``build_network``: a pool that would leave less than 2x2 is left out)."""
    sizes, size = [], side
    for _ in range(2):
        pool = size // 2 >= 2
        size = size // 2 if pool else size
        sizes.append((size, pool))
    return sizes


def state_shapes(side: int, n_classes: int, width: int, dense: int,
                 convs: int = 1) -> dict[str, tuple[int, ...]]:
    """The ``net.*`` arrays of the CNN and their shapes, without torch (as ``build_network``
    names them: per block ``convs - 1`` times conv, BN, ReLU, then conv, pool if any, BN,
    ReLU; then flatten and the dense layers)."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels_in = 0, 1
    for channels, (_, pool) in zip((width, 2 * width), pooled_sizes(side), strict=True):
        for last in [False] * (convs - 1) + [True]:
            shapes[f"net.{index}.weight"] = (channels, channels_in, 3, 3)
            bn = index + (2 if pool and last else 1)
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"net.{bn}.{name}"] = (channels,)
            shapes[f"net.{bn}.num_batches_tracked"] = ()
            index, channels_in = bn + 2, channels
    size = pooled_sizes(side)[-1][0]
    first = index + 1  # after the Flatten
    shapes[f"net.{first}.weight"] = (dense, channels_in * size * size)
    shapes[f"net.{first}.bias"] = (dense,)
    shapes[f"net.{first + 2}.weight"] = (n_classes, dense)
    shapes[f"net.{first + 2}.bias"] = (n_classes,)
    return shapes


@dataclass(frozen=True)
class _Block:
    kernel: np.ndarray  # (9 * c_in, c_out): conv weights times |BN scale|, rows (c_in, i, j)
    sign: np.ndarray | None  # (c_out,) the BN scale's sign, None when all positive
    shift: np.ndarray  # (c_out,) the BN shift b
    pool: bool


class NumpyCNN:
    """The CNN's forward pass from its state arrays, float32, channels last.

    Parameters
    ----------
    state : mapping of str to ndarray
        The CNN's ``state_dict()`` (at least its ``net.*`` arrays), checked before.
    side : int
        Side of the (square) input images.
    """

    def __init__(self, state: Mapping[str, np.ndarray], side: int) -> None:
        self.side = side
        net = {name.removeprefix("net."): np.asarray(value) for name, value in state.items()
               if name.startswith("net.")}
        convs = sorted(int(name.split(".")[0]) for name in net
                        if name.endswith(".weight") and net[name].ndim == 4)
        denses = sorted(int(name.split(".")[0]) for name in net
                         if name.endswith(".weight") and net[name].ndim == 2)
        per_block = len(convs) // 2  # two blocks of equally many convolutions
        # Only the last convolution of a block pools (when the block pools at all).
        pools = [pool and k == per_block - 1 for _, pool in pooled_sizes(side)
                 for k in range(per_block)]
        self.blocks: list[_Block] = []
        for conv, pool in zip(convs, pools, strict=True):
            bn = conv + (2 if pool else 1)
            weight = net[f"{conv}.weight"].astype(np.float64)  # (c_out, c_in, 3, 3)
            scale = net[f"{bn}.weight"] / np.sqrt(net[f"{bn}.running_var"].astype(np.float64)
                                                  + BN_EPS)
            shift = net[f"{bn}.bias"] - net[f"{bn}.running_mean"] * scale
            folded = weight * np.abs(scale)[:, None, None, None]
            kernel = folded.reshape(len(weight), -1).T  # (c_in * 9, c_out)
            self.blocks.append(_Block(
                kernel=np.ascontiguousarray(kernel, dtype=np.float32),
                sign=None if np.all(scale >= 0) else np.sign(scale).astype(np.float32),
                shift=shift.astype(np.float32), pool=pool))
        hidden_w = net[f"{denses[0]}.weight"]  # (dense, c * h * w): torch flattens NCHW
        channels = self.blocks[-1].kernel.shape[1]
        size = pooled_sizes(side)[-1][0]
        # Reordered once for NHWC maps: (dense, c, h, w) -> (h, w, c, dense).
        self.hidden = np.ascontiguousarray(
            hidden_w.reshape(-1, channels, size, size).transpose(2, 3, 1, 0)
            .reshape(-1, hidden_w.shape[0]), dtype=np.float32)
        self.hidden_bias = net[f"{denses[0]}.bias"].astype(np.float32)
        self.out = np.ascontiguousarray(net[f"{denses[1]}.weight"].T, dtype=np.float32)
        self.out_bias = net[f"{denses[1]}.bias"].astype(np.float32)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Logits float32 (n, n_classes) of features ``X`` (n, n_features) in [0, 1]."""
        X = np.asarray(X, dtype=np.float32)
        missing = self.side * self.side - X.shape[1]
        if missing:  # features laid out row by row in the square, zeros after (as the CNN)
            X = np.pad(X, ((0, 0), (0, missing)))
        images = X.reshape(len(X), self.side, self.side, 1)
        # One BLAS thread: these matrices are too small for a second one to pay, and on a
        # busy machine OpenBLAS's spinning threads made a batch 4x and one digit 18x slower
        # (1,000 test digits: 0.74 s with 2 threads, 0.18 s with 1; benchmarks/bench_pretrained.py).
        with _blas().limit(limits=1, user_api="blas"):
            return np.concatenate([self._forward(images[start : start + BATCH])
                               for start in range(0, len(images), BATCH)]
                                  or [np.zeros((0, len(self.out_bias)), np.float32)])

    def _forward(self, x: np.ndarray) -> np.ndarray:
        for block in self.blocks:
            x = _conv3x3(x, block.kernel)  # (n, h, w, c_out)
            if block.pool:
                # MaxPool2d(2) as the max of the four strided quarters (50x faster than
                # reshape(...).max(axis=(2, 4))); an odd last row/column is dropped, as torch does.
                h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
                x = np.maximum(np.maximum(x[:, 0:h:2, 0:w:2], x[:, 0:h:2, 1:w:2]),
                               np.maximum(x[:, 1:h:2, 0:w:2], x[:, 1:h:2, 1:w:2]))
            if block.sign is not None:
                x = x * block.sign
            x += block.shift
            np.maximum(x, 0, out=x)  # ReLU
        hidden = x.reshape(len(x), -1) @ self.hidden + self.hidden_bias  # (n, dense)
        np.maximum(hidden, 0, out=hidden)
        return hidden @ self.out + self.out_bias


@cache
def _blas() -> ThreadpoolController:
    """The process's thread pools, found once (finding them costs milliseconds)."""
    return ThreadpoolController()


def _conv3x3(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 convolution, padding 1, as one matrix product: x (n, h, w, c) -> (n, h, w, c_out)."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = sliding_window_view(padded, (3, 3), axis=(1, 2))  # (n, h, w, c, 3, 3), a view
    columns = windows.reshape(n * h * w, c * 9)  # the one copy: im2col, rows (c, i, j)
    return (columns @ kernel).reshape(n, h, w, -1)
