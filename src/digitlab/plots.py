"""Figures of what a model learned. Each function takes arrays (and optionally
an Axes to draw into) and returns the matplotlib Figure.

Figures are built on ``matplotlib.figure.Figure`` directly, never through
pyplot: no global state, no window, safe in a web server's threads, and
nothing ever calls ``show()``. :func:`save_png` writes one atomically.

Images are drawn as stored: uint8 (or float) ``(h, w)``, 0 background and
255 ink, shown as dark ink on white paper ("gray_r"). Images stored
column-major on disk (the course ``.mat`` files) were already transposed
upright when they were read.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from digitlab.atomic import atomic_file
from digitlab.drawing import can_fork, frame, widen_pipe
from digitlab.drawing import unframe as _unframe  # a name of this module: tests replace it

if TYPE_CHECKING:
    from digitlab.calibration import Reliability
    from digitlab.models import DigitClassifier

INK = "gray_r"  # 0 -> white paper, 255 -> black ink
DIVERGING = "RdBu_r"  # negative weights blue, positive red, zero white
MISTAKE_COLOUR = "#c0392b"
ACTIVATION = "magma"  # ReLU outputs: 0 black, strongest bright


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax  # type: ignore[return-value]
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def save_png(fig: Figure, path: str | os.PathLike[str], *, dpi: float | str = "figure") -> None:
    """Write ``fig`` as a PNG, atomically."""
    with atomic_file(path) as tmp:
        _write_png(fig, tmp, dpi)


def png_bytes(fig: Figure, *, dpi: float | str = "figure") -> bytes:
    """``fig`` as PNG bytes (for embedding in the HTML report)."""
    buffer = io.BytesIO()
    _write_png(fig, buffer, dpi)
    return buffer.getvalue()


def png_bytes_all(figures: Sequence[Figure | Callable[[], Figure]]) -> list[bytes]:
    """Every figure as PNG bytes, in order: :func:`png_bytes` of each. A figure may be
    given as a callable that builds it (a :class:`digitlab.drawing.Recipe`): it is then
    built in the process that draws it, so building is shared between the cores too.

    A run's figures take about half a second to draw, all of it in Python and
    Agg on one core. With a spare core this process forks once, and the two take
    the figures one at a time from a shared queue (a pipe holding each figure's
    number, one byte each: a read takes one, for one process only), so neither
    waits while the other draws a slow one; the child sends its PNGs back through
    another pipe. Only on Linux (fork) and only when no other Python thread runs
    (a forked child could wait forever on a lock that thread held, such as Agg's
    own). Should the child fail, this process draws the figures it did not send.
    """
    figures = list(figures)
    if len(figures) < 2 or len(figures) > 256 or not can_fork():
        return [png_of(fig) for fig in figures]
    queue_read, queue_write = os.pipe()
    os.write(queue_write, bytes(drawing_order(figures)))  # at most 256 bytes: never blocks
    os.close(queue_write)
    read_end, write_end = os.pipe()
    widen_pipe(write_end)  # room for every PNG
    with warnings.catch_warnings():
        from digitlab.engines import FORK_WARNING

        warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: draw, send, and leave at once (no atexit, no buffers flushed)
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as pipe:
                while taken := os.read(queue_read, 1):
                    png = png_of(figures[taken[0]])
                    pipe.write(frame(taken + png))
                    pipe.flush()
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    drawn: dict[int, bytes] = {}
    try:
        while taken := os.read(queue_read, 1):
            drawn[taken[0]] = png_of(figures[taken[0]])
    finally:
        os.close(queue_read)
        with os.fdopen(read_end, "rb") as pipe:
            sent = pipe.read()
        _, status = os.waitpid(pid, 0)
    for payload in _unframe(sent) if status == 0 else []:  # a figure's number, then its PNG
        drawn[payload[0]] = payload[1:]
    return [drawn[i] if i in drawn else png_of(figure) for i, figure in enumerate(figures)]


# Recipes that take about twice as long to draw as the rest (0.08-0.14 s each on one
# AMD EPYC core, against 0.02-0.07 s): many labels, or two axes laid out.
SLOW_TO_DRAW = frozenset({"digit_with_values", "confusion_figure", "reliability_diagram",
                          "learning_curves"})


def drawing_order(figures: Sequence[Figure | Callable[[], Figure]]) -> list[int]:
    """The figures' positions, the recipes SLOW_TO_DRAW first (else in order): two processes
    taking them in this order finish together, where one taking a slow figure last would
    leave the other idle."""
    return sorted(range(len(figures)),
                  key=lambda i: getattr(figures[i], "function", None) not in SLOW_TO_DRAW)


def png_of(figure: Figure | Callable[[], Figure]) -> bytes:
    """:func:`png_bytes` of ``figure``, built first when it is a recipe."""
    return png_bytes(figure if isinstance(figure, Figure) else figure())


def _write_png(fig: Figure, target: Any, dpi: float | str) -> None:
    """``fig`` as a PNG into ``target`` (a path or a binary file), drawn once.

    ``savefig`` draws a figure twice when it has a layout engine (a first pass
    without rendering to settle the layout, then the real one, which lays it out
    again); the Agg canvas's own ``print_png`` draws once, lays out once and
    writes the same bytes (tested), a fifth less time per figure. Another dpi than
    the figure's own still goes through ``savefig``, which rescales the figure.
    """
    if dpi == "figure":
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig).print_png(target)
    else:
        fig.savefig(target, format="png", dpi=dpi)


# ---------------------------------------------------------------- digits


def digit_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    mistakes: Sequence[bool] | np.ndarray | None = None,
    suptitle: str | None = None,
    ncols: int = 10,
) -> Figure:
    """A grid of digits with a title each ("label" or "label,prediction").

    Parameters
    ----------
    images : ndarray of shape (n, h, w)
    titles : sequence of str, optional
    mistakes : sequence of bool, optional
        Marks wrong predictions: red title and a red frame.
    suptitle : str, optional
    """
    return _digit_panels(images, titles, ncols, suptitle).finish(mistakes)


def _digit_panels(images: np.ndarray, titles: Sequence[str] | None, ncols: int,
                  suptitle: str | None) -> PanelGrid:
    """The digits drawn in a PanelGrid with room for their titles' lines, not yet finished
    (:func:`pixel_arrows` marks pixels on them first)."""
    images = np.asarray(images)
    lines = max((title.count("\n") + 1 for title in titles), default=1) if titles is not None else 1
    grid = PanelGrid(len(images), ncols, (1.1, 1.1 + 0.16 * lines), suptitle,
                     titles=titles, title_lines=lines)
    for i, image in enumerate(images):
        grid.image(i, image, cmap=INK, vmin=0, vmax=255)
    return grid


MIN_GRID_WIDTH = 3.5  # inches
PANEL_TITLE = "panel title"  # the gid of a panel's title: panel_titles() finds them by it
ROW_LABEL = "row label"  # the gid of a row's name, left of the row (cnn_activations)
_MARGIN = 0.05  # inches around each panel in its cell
_LINE = 0.16  # inches of cell per line of a 9-point title


class PanelGrid:
    """``n`` panels (an image, a frame and an optional title each) in rows of ``ncols``,
    all on one Axes that covers the figure and counts in inches from its lower left.

    One Axes for the whole grid, not one per panel: matplotlib takes 5-10 ms to make an
    Axes and lays each one out again at every draw, which was most of a grid's time (a
    20-digit grid: 0.20 s to build and draw with an Axes per panel, 0.05 s on one; a
    CNN's 170-panel activation grid took 2.4 s to draw). Panels never move, so no layout
    engine is needed: the figure's size fixes every position.

    Parameters
    ----------
    n, ncols : int
        Panels, and panels per row.
    cell : (float, float)
        Each panel's cell in inches, its title included; scaled up so the figure is at
        least MIN_GRID_WIDTH wide (a grid of one or two digits is not a stamp).
    suptitle : str, optional
        Over the grid, on as many lines as it has.
    titles : sequence of str, optional
        One per panel, drawn by :meth:`finish`; their size shrinks (to 5 points at the
        least) until the longest line fits a cell (Fashion-MNIST's "T-shirt/top,Ankle boot").
    title_lines : int
        Lines of title room in each cell.
    fontsize : float
        The titles' size when they fit.
    left, right, header : float
        Inches kept free left of the grid (row names), right of it (a colour bar) and
        over its first row (column titles).
    min_width : float
        The figure's least width, made up on the right.
    """

    def __init__(self, n: int, ncols: int, cell: tuple[float, float], suptitle: str | None, *,
                 titles: Sequence[str] | None = None, title_lines: int = 1, fontsize: float = 9,
                 left: float = 0.0, right: float = 0.0, header: float = 0.0,
                 min_width: float = 0.0) -> None:
        ncols = max(1, min(ncols, n))
        nrows = max(1, math.ceil(n / ncols))
        scale = max(1.0, MIN_GRID_WIDTH / (cell[0] * ncols))
        cell_width, cell_height = cell[0] * scale, cell[1] * scale
        top = 0.4 + 0.22 * suptitle.count("\n") if suptitle else 0.0
        # Whole pixels at 100 dpi: a PNG is exactly its figure's size.
        self.width = round(max(left + cell_width * ncols + right, min_width), 2)
        self.height = round(cell_height * nrows + header + top, 2)
        self.fig = Figure(figsize=(self.width, self.height), dpi=100)
        self.ax = self.fig.add_axes((0.0, 0.0, 1.0, 1.0))
        self.ax.set_axis_off()
        if suptitle:
            self.fig.suptitle(suptitle, y=1 - 0.08 / self.height, va="top")
        band = (_LINE * title_lines + 0.04) * scale if titles is not None else 0.0
        side = min(cell_width, cell_height - band) - 2 * _MARGIN
        # Each panel's box (left, bottom, width, height): its square, until image() fits
        # the image's own shape into it; pixels (h, w) of the image drawn there.
        self.boxes: list[tuple[float, float, float, float]] = []
        self.pixels: list[tuple[int, int]] = [(1, 1)] * n
        for i in range(n):
            row, col = divmod(i, ncols)
            cell_top = self.height - top - header - row * cell_height
            x = left + col * cell_width + (cell_width - side) / 2
            self.boxes.append((x, cell_top - band - _MARGIN - side, side, side))
        self.titles = list(titles) if titles is not None else None
        self.fontsize = _fitting_fontsize(self.titles or [], cell_width, fontsize)

    def image(self, i: int, array: np.ndarray, **imshow: Any) -> AxesImage:
        """Draw ``array`` ((h, w), or (h, w, 3) colours) in panel ``i``, as large as its
        square allows, centred; ``imshow`` as Axes.imshow takes it (cmap, vmin, ...)."""
        x, y, side, _ = self.boxes[i]
        h, w = np.shape(array)[:2]
        width, height = side * w / max(h, w), side * h / max(h, w)
        self.boxes[i] = (x + (side - width) / 2, y + (side - height) / 2, width, height)
        self.pixels[i] = (h, w)
        x, y = self.boxes[i][:2]
        return self.ax.imshow(array, extent=(x, x + width, y, y + height),
                              interpolation="nearest", **imshow)

    def point(self, i: int, row: float, col: float) -> tuple[float, float]:
        """Where the centre of pixel ``(row, col)`` of panel ``i``'s image lies on the Axes."""
        x, y, width, height = self.boxes[i]
        h, w = self.pixels[i]
        return x + (col + 0.5) * width / w, y + height - (row + 0.5) * height / h

    def label_row(self, i: int, text: str, *, fontsize: float = 9) -> Text:
        """Name the row of panel ``i``, on its left."""
        x, y, _, height = self.boxes[i]
        return self.ax.text(x - 0.08, y + height / 2, text, ha="right", va="center",
                            fontsize=fontsize, gid=ROW_LABEL)

    def title_column(self, i: int, text: str, *, fontsize: float = 8) -> Text:
        """A column's title over panel ``i`` (of the first row), in the header."""
        x, y, width, height = self.boxes[i]
        return self.ax.text(x + width / 2, y + height + 0.04, text, ha="center", va="bottom",
                            fontsize=fontsize)

    def colorbar(self, shown: AxesImage, label: str) -> None:
        """A colour bar for ``shown`` in the room kept on the right, 80% of the grid's height."""
        bottom = min(y for _, y, _, _ in self.boxes)
        top = max(y + height for _, y, _, height in self.boxes)
        span = 0.8 * (top - bottom)
        right = max(x + width for x, _, width, _ in self.boxes)
        cax = self.fig.add_axes(((right + 0.15) / self.width, (bottom + 0.1 * (top - bottom)) / self.height,
                                 0.12 / self.width, span / self.height))
        self.fig.colorbar(shown, cax=cax, label=label)

    def finish(self, mistakes: Sequence[bool] | np.ndarray | None = None) -> Figure:
        """Add the titles and frames (red, thick, with a red title, where ``mistakes``
        is true), fix the Axes to inches, and return the figure."""
        wrong = [bool(m) for m in mistakes] if mistakes is not None else [False] * len(self.boxes)
        for i, (x, y, width, height) in enumerate(self.boxes):
            if self.titles is not None:
                self.ax.text(x + width / 2, y + height + 0.04, self.titles[i], ha="center",
                             va="bottom", fontsize=self.fontsize, gid=PANEL_TITLE,
                             color=MISTAKE_COLOUR if wrong[i] else "black")
        self.ax.add_collection(PatchCollection(
            [Rectangle((x, y), width, height) for x, y, width, height in self.boxes],
            facecolors="none", zorder=3,
            edgecolors=[MISTAKE_COLOUR if bad else "black" for bad in wrong],
            linewidths=[2.0 if bad else 0.8 for bad in wrong]))
        self.ax.set_xlim(0, self.width)
        self.ax.set_ylim(0, self.height)
        self.ax.set_aspect("auto")  # the Axes is the figure: its units are inches already
        return self.fig


def _text_width(texts: Sequence[str], fontsize: float) -> float:
    """About how many inches the longest of ``texts`` takes at ``fontsize`` points (DejaVu
    Sans averages about 0.6 em a character)."""
    return 0.6 * fontsize / 72 * max((len(line) for text in texts for line in text.split("\n")),
                                     default=0)


def _fitting_fontsize(titles: Sequence[str], width: float, fontsize: float) -> float:
    """The largest size up to ``fontsize`` (and 5 points at the least) at which the longest
    line of ``titles`` fits in 95% of ``width`` inches."""
    needed = _text_width(titles, fontsize)
    return max(5.0, fontsize * min(1.0, 0.95 * width / needed)) if needed else fontsize


def panel_images(fig: Figure) -> list[AxesImage]:
    """The images of a grid figure's panels (:func:`digit_grid`, :func:`weight_images`,
    :func:`cnn_activations`, ...), in order: a grid draws every panel on one Axes."""
    return list(fig.axes[0].images)


def panel_titles(fig: Figure) -> list[Text]:
    """The titles of a grid figure's panels, in order (their colour marks mistakes)."""
    return [text for text in fig.axes[0].texts if text.get_gid() == PANEL_TITLE]


def digit_with_values(
    image: np.ndarray, *, title: str | None = None, ax: Axes | None = None, vmax: float = 255
) -> Figure:
    """One digit, large, with each pixel's value written on it.

    ``vmax`` is full ink: 255 for uint8 images, 16 for scikit-learn's raw 8x8 counts
    (shown as the exercise prints them, 5 and 13 rather than 80 and 207).
    """
    image = np.asarray(image)
    h, w = image.shape
    fig, ax = _figure(ax, (0.32 * w + 1, 0.32 * h + 1))
    ax.imshow(image, cmap=INK, vmin=0, vmax=vmax, interpolation="nearest")
    fontsize = max(3.0, min(8.0, 120.0 / max(h, w)))
    for (row, col), value in np.ndenumerate(image):
        if value:
            # Out of the constrained layout: each label sits inside its pixel, so measuring
            # hundreds of them (twice a draw) never moved anything and was most of the
            # figure's time.
            ax.text(col, row, f"{value:g}" if image.dtype.kind == "f" else str(value),
                    ha="center", va="center", fontsize=fontsize,
                    color="white" if value > vmax / 2 else "black", in_layout=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def average_digits(means: np.ndarray, names: Sequence[str], *, suptitle: str = "Average digits") -> Figure:
    """The average image of each class, side by side."""
    return digit_grid(np.asarray(means), list(names), suptitle=suptitle)


# ---------------------------------------------------------------- weights


def weight_image(
    weights: np.ndarray,
    shape: tuple[int, int],
    *,
    title: str | None = None,
    ax: Axes | None = None,
    marked: dict[str, tuple[int, int]] | None = None,
) -> Figure:
    """A weight vector as an image on a diverging colour map centred on zero.

    Rows and columns are numbered, so a pixel can be read off as (row, col);
    ``marked`` names pixels to circle and label, e.g. ``{"most positive": (20, 22)}``
    (the first green, the next red, as :func:`pixel_arrows` marks them).
    """
    grid = np.asarray(weights, dtype=np.float64).reshape(shape)
    limit = float(np.abs(grid).max()) or 1.0
    fig, ax = _figure(ax, (4.6, 4.0))
    shown = ax.imshow(grid, cmap=DIVERGING, vmin=-limit, vmax=limit, interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.85, label="weight")
    _pixel_ticks(ax, shape)
    for (name, (row, col)), colour in zip((marked or {}).items(), MARK_COLOURS, strict=False):
        ax.plot(col, row, "o", markersize=9, markerfacecolor="none", markeredgecolor=colour, mew=2,
                label=f"{name} ({row}, {col})")
    if marked:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncols=2, frameon=False)
    if title:
        ax.set_title(title)
    return fig


MARK_COLOURS = ("#1e8449", "#c0392b")  # most positive green, most negative red


def _pixel_ticks(ax: Axes, shape: tuple[int, int]) -> None:
    """Row and column numbers every few pixels (0, 4, 8, ... on 28x28), labelled."""
    step = max(1, round(max(shape) / 7))
    ax.set_xticks(range(0, shape[1], step))
    ax.set_yticks(range(0, shape[0], step))
    ax.tick_params(labelsize=7, length=2)
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)


def weight_images(
    weights: np.ndarray, shape: tuple[int, int], titles: Sequence[str], *, suptitle: str | None = None
) -> Figure:
    """Several weight vectors (rows of ``weights``) as images, one colour scale each."""
    weights = np.asarray(weights, dtype=np.float64)
    grid = PanelGrid(len(weights), 8, (1.5, 1.6), suptitle, titles=titles, fontsize=8)
    for i, vector in enumerate(weights):
        limit = float(np.abs(vector).max()) or 1.0
        grid.image(i, vector.reshape(shape), cmap=DIVERGING, vmin=-limit, vmax=limit)
    return grid.finish()


def pixel_arrows(
    images: np.ndarray,
    positive: tuple[int, int],
    negative: tuple[int, int],
    *,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Example digits with the most positive pixel marked by a green arrow and the
    most negative by a red one (``(row, col)`` each); the suptitle names both."""
    where = (f"green: most positive pixel ({positive[0]}, {positive[1]}); "
             f"red: most negative ({negative[0]}, {negative[1]})")
    grid = _digit_panels(images, titles, min(len(images), 6),
                         f"{suptitle}\n{where}" if suptitle else where)
    for i in range(len(grid.boxes)):
        for (row, col), colour in zip((positive, negative), MARK_COLOURS, strict=True):
            grid.ax.annotate("", xy=grid.point(i, row, col), xytext=grid.point(i, row - 5, col + 5),
                             arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2},
                             annotation_clip=False)
            grid.ax.plot(*grid.point(i, row, col), "o", markersize=4, markerfacecolor="none",
                         markeredgecolor=colour)
    return grid.finish()


# ---------------------------------------------------------------- errors


def confusion_figure(matrix: np.ndarray, names: Sequence[str], *, ax: Axes | None = None) -> Figure:
    """The confusion matrix: rows are true labels, columns predictions, counts written in."""
    matrix = np.asarray(matrix)
    k = len(names)
    fig, ax = _figure(ax, (max(3.6, 1.0 + 0.55 * k), max(3.0, 0.8 + 0.5 * k)))
    ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    limit = matrix.max() or 1
    for (i, j), count in np.ndenumerate(matrix):
        # Out of the constrained layout, as digit_with_values' labels: each count sits in
        # its cell, so measuring them all at each draw moved nothing.
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > limit / 2 else "black", in_layout=False)
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    return fig


def similarity_bars(
    ranking: list[dict[str, Any]], target_name: str, names: Sequence[str], *, ax: Axes | None = None
) -> Figure:
    """Bars: the share of each true digit predicted as ``target_name`` (from
    :func:`digitlab.analysis.mistaken_for`); the target's own share, when listed, in grey."""
    fig, ax = _figure(ax, (6.0, 3.2))
    labels = [names[e["label"]] if e["label"] < len(names) else str(e["label"]) for e in ranking]
    colours = ["#95a5a6" if label == target_name else "#2e86c1" for label in labels]
    bars = ax.bar(labels, [e["percent"] for e in ranking], color=colours)
    ax.bar_label(bars, labels=[f"{e['percent']:.1f}" for e in ranking], fontsize=7)
    ax.set_ylabel(f"% predicted as {target_name}")
    ax.set_xlabel("true digit")
    ax.set_title(f"Which digit is most often mistaken for {target_name}")
    return fig


def readable_probability(p: float) -> str:
    """A probability as text that tells small ones apart: "87%", "0.23%", "3.2e-05".

    Worst-written digits have p(true) far below 1%, and ``f"{p:.2f}"`` prints every
    one of them as 0.00.
    """
    if p >= 0.995:
        return f"{p:.1%}" if p < 1 else "100%"
    if p >= 0.01:
        return f"{p:.0%}" if p >= 0.1 else f"{p:.1%}"
    if p >= 0.001:
        return f"{p:.2%}"
    return "0" if p <= 0 else f"{p:.1e}"


def worst_written(
    images: np.ndarray, p_true: np.ndarray, labels: Sequence[str], predicted: Sequence[str],
    *, suptitle: str = "Worst-written: true,predicted and p(true)",
) -> Figure:
    """The images the model found least like their own label, with p(true label)."""
    titles = [f"{t},{p}\n{readable_probability(float(q))}"
              for t, p, q in zip(labels, predicted, p_true, strict=True)]
    mistakes = [t != p for t, p in zip(labels, predicted, strict=True)]
    return digit_grid(images, titles, mistakes=mistakes, suptitle=suptitle)


# ---------------------------------------------------------------- training


def learning_curves(history: dict[str, list[float]], *, val_label: str = "validation") -> Figure:
    """Loss and accuracy per epoch, train and (when recorded) the ``eval_set``'s
    ``val_*`` figures, labelled ``val_label`` (the lab shows the test split, for teaching)."""
    fig = Figure(figsize=(9.0, 3.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, label, style in ((metric, "train", "-"), (f"val_{metric}", val_label, "--")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3,
                        label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.25
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle("Learning curves")
    return fig


def candidates_curve(
    candidates: Sequence[int], best_accuracy: Sequence[float], n_candidates: int,
    *, baseline: float | None = None, ax: Axes | None = None,
) -> Figure:
    """Guess-and-check: the best training accuracy so far against candidates tried."""
    fig, ax = _figure(ax, (6.0, 3.4))
    xs = [c + 1 for c in candidates] + [n_candidates]
    ys = [*list(best_accuracy), best_accuracy[-1]] if best_accuracy else []
    ax.step(xs, ys, where="post", label="best so far")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label="majority baseline")
    ax.set_xscale("log")
    ax.set_xlabel("candidates tried")
    ax.set_ylabel("training accuracy")
    ax.set_title("Guess-and-check: accuracy versus candidates")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def reliability_diagram(curves: Sequence[tuple[str, Reliability]], *, title: str) -> Figure:
    """Accuracy against confidence per confidence bin, one line per curve (label, bins),
    over the diagonal a calibrated model follows; below, the share of images per bin.

    Points above the diagonal are under-confident bins (right more often than the
    confidence says), points below it over-confident ones.
    """
    fig = Figure(figsize=(5.6, 5.6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for (label, bins), marker in zip(curves, "os^D", strict=False):
        filled = bins.count > 0
        top.plot(bins.confidence[filled], bins.accuracy[filled], marker=marker, markersize=4,
                 label=f"{label} (ECE {bins.ece:.3f})")
        centres = (bins.edges[:-1] + bins.edges[1:]) / 2
        share = bins.count / max(int(bins.count.sum()), 1)
        bottom.step(centres, share, where="mid", label=label)
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize=9)
    top.set_title(title)
    bottom.set_xlabel("confidence (largest probability)")
    bottom.set_ylabel("share")
    bottom.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- what a network learned


def mlp_first_layer(
    model: DigitClassifier, *, count: int = 16, shape: tuple[int, int] | None = None,
) -> Figure:
    """The first ``count`` hidden units of a network (``model.hidden_weights()``, e.g. the
    :class:`~digitlab.models.MLP`), each unit's weights over the pixels as an image on a
    diverging map centred on zero, one scale per unit (units differ in size).

    ``shape``: the image's (h, w); default the square that holds the features.
    """
    hidden = model.hidden_weights()
    if hidden is None:
        raise ValueError(f"a {getattr(model, 'kind', type(model).__name__)} model has no hidden "
                         "layer over the pixels")
    if shape is None:
        side = math.isqrt(hidden.shape[1])
        shape = (side, side)
    count = min(count, len(hidden))
    return weight_images(hidden[:count], shape, [f"unit {i}" for i in range(count)],
                         suptitle=f"First-layer weights of {count} of {len(hidden)} hidden units")


def cnn_filters(model: Any, *, suptitle: str | None = None) -> Figure:
    """The CNN's first-layer 3x3 kernels (``model.first_filters()``), one panel per channel,
    on one diverging scale shared by all (red adds ink under the kernel, blue subtracts it)."""
    filters = np.asarray(model.first_filters(), dtype=np.float64)  # (channels, 3, 3)
    limit = float(np.abs(filters).max()) or 1.0
    grid = PanelGrid(len(filters), 8, (0.9, 1.0),
                     suptitle or f"First-layer filters ({len(filters)} channels, 3x3)",
                     titles=[f"ch {i}" for i in range(len(filters))], fontsize=8,
                     right=0.8, min_width=4.8)  # room for the colour bar and the title
    for i, kernel in enumerate(filters):
        shown = grid.image(i, kernel, cmap=DIVERGING, vmin=-limit, vmax=limit)
    grid.colorbar(shown, "weight")  # the scale all panels share
    return grid.finish()


def cnn_activations(
    model: Any, images: np.ndarray, labels: Sequence[str], *, suptitle: str | None = None,
) -> Figure:
    """One row per digit: the digit, then each channel of the CNN's first block after its
    ReLU (``model.first_block``), all on one scale so a weak channel looks weak.

    Parameters
    ----------
    model : CNN
        Fitted.
    images : ndarray of shape (n, h, w), uint8
        As stored (0 background, 255 ink); the model sees them / 255.
    labels : sequence of str
        A name for each row (e.g. its true label).
    """
    images = np.asarray(images)
    features = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    maps = model.first_block(features)  # (n, channels, h', w')
    n, channels = maps.shape[:2]
    top = float(maps.max()) or 1.0
    grid = PanelGrid(n * (channels + 1), channels + 1, (0.7, 0.75),
                     suptitle or "First-block activations (after ReLU), one digit per class",
                     left=0.15 + _text_width(labels, 9), right=0.8, header=0.2)
    for row in range(n):
        first = row * (channels + 1)
        grid.image(first, images[row], cmap=INK, vmin=0, vmax=255)
        grid.label_row(first, labels[row])
        for channel in range(channels):
            shown = grid.image(first + 1 + channel, maps[row, channel], cmap=ACTIVATION, vmin=0,
                               vmax=top)
    for column, title in enumerate(["digit", *(f"ch {channel}" for channel in range(channels))]):
        grid.title_column(column, title)
    grid.colorbar(shown, "activation")
    return grid.finish()


def attributions(
    model: DigitClassifier, images: np.ndarray, captions: Sequence[str], *,
    method: str = "auto", mistakes: Sequence[bool] | np.ndarray | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Why the model read each digit as it did: :func:`digitlab.explain.explain`'s map of
    the predicted class over the digit (:func:`digitlab.explain.overlay`: red pixels
    support the answer, blue argue against it), one panel per digit.

    Parameters
    ----------
    model : DigitClassifier
        Fitted.
    images : ndarray of shape (n, h, w), uint8
        As stored; the model sees them / 255.
    captions : sequence of str
        One per digit, e.g. "true,predicted".
    method : str
        As :func:`digitlab.explain.explain` (``"auto"``: the best by the deletion test).
    mistakes : sequence of bool, optional
        Marks wrong predictions: red caption and frame.
    """
    from digitlab.explain import explain, method_for, overlay

    images = np.asarray(images)
    features = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    used = method_for(model) if method == "auto" else method
    maps = explain(model, features, used)  # (n, h, w)
    title = suptitle or f"Why: {used} (red supports the answer, blue argues against it)"
    grid = PanelGrid(len(images), 10, (1.1, 1.3), title, titles=captions)
    for i, image in enumerate(images):
        grid.image(i, overlay(image, maps[i], scale=1))
    return grid.finish(mistakes)


# ---------------------------------------------------------------- sweeps


def setting_accuracy(name: str, entries: Sequence[dict[str, Any]]) -> Figure:
    """Validation and test accuracy against one swept setting: each value's mean, with
    its standard deviation as error bars (``entries`` from ``sweep.setting_summary``).
    Numbers on a number line (logarithmic when they span 100x), anything else in order."""
    fig, ax = _figure(None, (6.0, 3.6))
    values = [entry["value"] for entry in entries]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    xs = np.array(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    for split, style in (("validation", "o-"), ("test", "s--")):
        means = [entry[f"{split}_mean"] for entry in entries]
        if all(m is None for m in means):
            continue
        mean = np.array([np.nan if m is None else m for m in means], dtype=float)
        spread = np.array([np.nan if entry[f"{split}_std"] is None else entry[f"{split}_std"]
                           for entry in entries], dtype=float)
        ax.errorbar(xs, mean, yerr=spread, fmt=style, capsize=3, label=split)
    if numeric and len(xs) and xs.min() > 0 and xs.max() >= 100 * xs.min():
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in values])
    _finish_accuracy_axes(ax, name, f"Accuracy against {name}")
    return fig


def _finish_accuracy_axes(ax: Axes, xlabel: str, title: str) -> None:
    """Labels, grid, legend (when anything is labelled) and title of a sweep's accuracy axes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.set_title(title)


def overlaid_learning_curves(curves: dict[str, dict[str, list[float]]], *, best: str | None = None) -> Figure:
    """Every run's accuracy per epoch on one axes: train solid, validation dashed, one
    colour a run; ``best`` (a key of ``curves``) drawn thick and named in the legend."""
    fig, ax = _figure(None, (7.5, 4.0))
    for index, (name, history) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        width, label = (2.8, f"best ({name})") if name == best else (1.0, None)
        for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, color=colour, linewidth=width,
                        alpha=1.0 if name == best else 0.6, label=label if key == "accuracy" else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish_accuracy_axes(ax, "epoch", f"Learning curves of {len(curves)} runs")
    return fig
