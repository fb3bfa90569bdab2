"""Every figure renders to a PNG of the expected size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from digitlab import plots


def _png_size(fig: Figure) -> tuple[int, int]:
    with Image.open(io.BytesIO(plots.png_bytes(fig))) as image:
        assert image.format == "PNG"
        return image.size


def _expected(fig: Figure) -> tuple[int, int]:
    width, height = fig.get_size_inches() * fig.dpi
    return round(width), round(height)


@pytest.fixture(scope="module")
def digits(sample):
    return sample.test_images[:12], sample.test_labels[:12]


def _figures(digits):
    images, labels = digits
    weights = np.linspace(-1, 1, 784)
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "accuracy": [0.6, 0.8],
               "val_accuracy": [0.55, 0.75]}
    ranking = [{"label": 3, "count": 2, "total": 10, "percent": 20.0},
               {"label": 8, "count": 1, "total": 10, "percent": 10.0}]
    return {
        "digit_grid": plots.digit_grid(images, [str(v) for v in labels], suptitle="digits",
                                       mistakes=[False] * 11 + [True]),
        "digit_with_values": plots.digit_with_values(images[0], title="one"),
        "average_digits": plots.average_digits(images[:10].astype(float), [str(i) for i in range(10)]),
        "weight_image": plots.weight_image(weights, (28, 28), title="w"),
        "weight_images": plots.weight_images(np.stack([weights, -weights]), (28, 28), ["a", "b"]),
        "pixel_arrows": plots.pixel_arrows(images[:4], (20, 22), (5, 5), suptitle="arrows"),
        "confusion": plots.confusion_figure(np.arange(9).reshape(3, 3), ["0", "1", "2"]),
        "similarity": plots.similarity_bars(ranking, "5", [str(i) for i in range(10)]),
        "worst_written": plots.worst_written(images[:3], np.array([0.1, 0.2, 0.3]),
                                             ["1", "2", "3"], ["7", "2", "5"]),
        "learning_curves": plots.learning_curves(history),
        "candidates": plots.candidates_curve([0, 4, 90], [0.5, 0.8, 0.9], 5000, baseline=0.9),
    }


def test_every_figure_renders_to_a_png_of_its_size(digits) -> None:
    figures = _figures(digits)
    assert len(figures) == 11
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        assert _png_size(fig) == _expected(fig), name


def test_figures_draw_into_a_given_axes() -> None:
    fig = Figure(figsize=(8, 4), dpi=50)
    left, right = fig.subplots(1, 2)
    assert plots.weight_image(np.zeros(64), (8, 8), ax=left) is fig
    assert plots.confusion_figure(np.eye(2, dtype=int), ["a", "b"], ax=right) is fig
    assert _png_size(fig) == (400, 200)


def test_mistakes_are_marked_in_red(digits) -> None:
    images, _ = digits
    fig = plots.digit_grid(images[:2], ["1,1", "2,7"], mistakes=[False, True])
    first, second = plots.panel_titles(fig)
    assert first.get_color() == "black"
    assert second.get_color() == plots.MISTAKE_COLOUR
    (frames,) = fig.axes[0].collections
    assert frames.get_linewidths()[1] > frames.get_linewidths()[0]  # a thick frame too
    assert tuple(frames.get_edgecolors()[1]) == pytest.approx(to_rgba(plots.MISTAKE_COLOUR))
    assert tuple(frames.get_edgecolors()[0]) == pytest.approx(to_rgba("black"))


def test_save_png_writes_atomically(tmp_path, digits) -> None:
    path = tmp_path / "figs" / "grid.png"
    plots.save_png(plots.digit_grid(digits[0][:3]), path)
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_weight_image_is_centred_on_zero() -> None:
    fig = plots.weight_image(np.array([0.0, 0.5, -2.0, 1.0]), (2, 2))
    image = fig.axes[0].images[0]
    assert image.get_clim() == (-2.0, 2.0)


def test_readable_probability_tells_small_probabilities_apart() -> None:
    shown = [plots.readable_probability(p) for p in (3e-05, 4.4e-05, 0.0023, 0.002, 0.05, 0.873, 0.9996, 1.0, 0.0)]
    assert shown == ["3.0e-05", "4.4e-05", "0.23%", "0.20%", "5.0%", "87%", "100.0%", "100%", "0"]


def test_worst_written_captions_read_each_probability(digits) -> None:
    images, _ = digits
    fig = plots.worst_written(images[:3], np.array([3e-05, 0.002, 0.4]), ["1", "2", "3"], ["7", "2", "5"])
    titles = [title.get_text() for title in plots.panel_titles(fig)]
    assert titles == ["1,7\n3.0e-05", "2,2\n0.20%", "3,5\n40%"]
    assert len(set(titles)) == 3  # never all "0.00"


def test_learning_curve_epochs_are_whole_numbers() -> None:
    fig = plots.learning_curves({"loss": [1.0, 0.7, 0.5, 0.4, 0.35], "accuracy": [0.5, 0.6, 0.7, 0.8, 0.85]})
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 5]
        assert ticks
        assert all(float(t).is_integer() for t in ticks)


def test_weight_image_numbers_rows_and_labels_marked_pixels() -> None:
    fig = plots.weight_image(np.linspace(-1, 1, 784), (28, 28),
                             marked={"most positive": (20, 22), "most negative": (0, 0)})
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0, 4, 8, 12, 16, 20, 24]
    assert list(ax.get_yticks()) == [0, 4, 8, 12, 16, 20, 24]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("column", "row")
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["most positive (20, 22)", "most negative (0, 0)"]


def test_pixel_arrows_name_the_pixels(digits) -> None:
    images, _ = digits
    fig = plots.pixel_arrows(images[:2], (20, 22), (7, 18), suptitle="is it a 2")
    text = fig.get_suptitle()
    assert "(20, 22)" in text
    assert "(7, 18)" in text
    assert text.startswith("is it a 2")


def test_similarity_bars_show_the_target_share_apart() -> None:
    ranking = [{"label": 5, "count": 8, "total": 10, "percent": 80.0},
               {"label": 3, "count": 1, "total": 10, "percent": 10.0}]
    fig = plots.similarity_bars(ranking, "5", [str(i) for i in range(10)])
    bars = fig.axes[0].patches
    assert [round(b.get_height()) for b in bars] == [80, 10]
    assert bars[0].get_facecolor() != bars[1].get_facecolor()


# ---------------------------------------------------------------- what a network learned


@pytest.fixture(scope="module")
def tiny_networks(sample):
    """A CNN (width 3) and an MLP (20 hidden units) trained briefly on 300 digits."""
    pytest.importorskip("torch")
    from digitlab.models import MLP
    from digitlab.models.cnn import CNN

    X, y = sample.features("train")[:300], sample.train_labels[:300]
    cnn = CNN(epochs=1, width=3, dense=8, random_state=0).fit(X, y)
    mlp = MLP(hidden=(20,), epochs=3, random_state=0).fit(X, y)
    return cnn, mlp


def test_cnn_filters_one_panel_per_channel_on_one_scale(tiny_networks) -> None:
    cnn, _ = tiny_networks
    fig = plots.cnn_filters(cnn)
    panels = plots.panel_images(fig)
    assert len(panels) == 3
    limit = float(np.abs(cnn.first_filters()).max())
    for image, kernel in zip(panels, cnn.first_filters(), strict=True):
        np.testing.assert_array_equal(image.get_array(), kernel)
        assert image.get_clim() == pytest.approx((-limit, limit))
    assert [title.get_text() for title in plots.panel_titles(fig)] == ["ch 0", "ch 1", "ch 2"]
    colour_bar = fig.axes[1]
    assert colour_bar.get_ylabel() == "weight"
    assert colour_bar.get_ylim() == pytest.approx((-limit, limit))
    assert _png_size(fig) == _expected(fig)


def test_cnn_activations_one_row_per_digit(tiny_networks, digits) -> None:
    cnn, _ = tiny_networks
    images, labels = digits
    fig = plots.cnn_activations(cnn, images[:4], [str(v) for v in labels[:4]])
    panels = plots.panel_images(fig)
    assert len(panels) == 4 * (1 + 3)  # each row: the digit, then 3 channels
    maps = cnn.first_block(images[:4].reshape(4, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(panels[1].get_array(), maps[0, 0])
    np.testing.assert_array_equal(panels[4 + 3].get_array(), maps[1, 2])
    np.testing.assert_array_equal(panels[4 * 2].get_array(), images[2])
    scales = {image.get_clim() for image in panels if image.get_cmap().name == "magma"}
    assert len(scales) == 1  # one scale for every channel of every digit
    assert scales.pop() == pytest.approx((0.0, float(maps.max())))
    rows = [text for text in fig.axes[0].texts if text.get_gid() == plots.ROW_LABEL]
    assert [text.get_text() for text in rows] == [str(v) for v in labels[:4]]
    # each name sits left of its row's digit, at the digit's height
    for row, text in enumerate(rows):
        left, _right, bottom, top = panels[4 * row].get_extent()
        x, y = text.get_position()
        assert x < left
        assert bottom < y < top
    assert _png_size(fig) == _expected(fig)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_attributions_show_the_explain_map_over_each_digit(tiny_networks, digits, kind) -> None:
    from digitlab.explain import explain, overlay

    model = dict(zip(("cnn", "mlp"), tiny_networks, strict=True))[kind]
    images, _ = digits
    captions = [f"{i},{i + 1}" for i in range(5)]
    fig = plots.attributions(model, images[:5], captions, mistakes=[True, False, False, False, False])
    panels = plots.panel_images(fig)
    titles = plots.panel_titles(fig)
    assert len(panels) == 5
    assert [title.get_text() for title in titles] == captions
    assert titles[0].get_color() == plots.MISTAKE_COLOUR != titles[1].get_color()
    maps = explain(model, images[:5].reshape(5, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(panels[2].get_array(), overlay(images[2], maps[2], scale=1))
    assert ("integrated-gradients" if kind == "cnn" else "gradient-x-input") in fig.get_suptitle()


def test_mlp_first_layer_draws_the_first_units(tiny_networks, sample) -> None:
    cnn, mlp = tiny_networks
    fig = plots.mlp_first_layer(mlp, count=8)
    panels = plots.panel_images(fig)
    assert len(panels) == 8
    np.testing.assert_array_equal(panels[5].get_array(), mlp.hidden_weights()[5].reshape(28, 28))
    limit = float(np.abs(mlp.hidden_weights()[5]).max())
    assert panels[5].get_clim() == pytest.approx((-limit, limit))  # each unit on its own scale
    assert len(plots.panel_images(plots.mlp_first_layer(mlp, count=100))) == 20  # all there are
    with pytest.raises(ValueError, match="no hidden layer"):
        plots.mlp_first_layer(cnn)


def test_a_grid_of_one_digit_is_not_a_stamp() -> None:
    fig = plots.digit_grid(np.zeros((1, 28, 28), np.uint8), ["7"], suptitle="one digit, a long title")
    width, height = fig.get_size_inches()
    assert width >= plots.MIN_GRID_WIDTH
    assert height >= 0.9 * width  # the cell scaled up with it, not squashed
    ten = plots.digit_grid(np.zeros((10, 28, 28), np.uint8))
    assert ten.get_size_inches()[0] == pytest.approx(11.0)  # wide grids keep their cells


def test_png_bytes_draws_once_and_writes_what_savefig_writes(digits) -> None:
    """The one-draw path gives savefig's bytes exactly (constrained layout included);
    another dpi than the figure's still rescales the picture."""
    images, labels = digits
    history = {"loss": [1.0, 0.5, 0.4], "accuracy": [0.6, 0.8, 0.85]}
    for build in (lambda: plots.digit_grid(images[:4], [str(v) for v in labels[:4]], suptitle="digits"),
                  lambda: plots.learning_curves(history)):  # a grid, and a constrained layout
        buffer = io.BytesIO()
        build().savefig(buffer, format="png")
        assert plots.png_bytes(build()) == buffer.getvalue()
    fig = plots.digit_grid(images[:4], [str(v) for v in labels[:4]], suptitle="digits")
    with Image.open(io.BytesIO(plots.png_bytes(fig, dpi=50))) as image:
        assert image.size == tuple(round(v / 2) for v in _expected(fig))


def test_digit_values_stay_out_of_the_layout(digits) -> None:
    """Hundreds of value labels are not measured by the constrained layout (they sit
    inside their pixels), yet every non-zero pixel still has its label."""
    image = digits[0][0]
    ax = plots.digit_with_values(image, title="one").axes[0]
    assert len(ax.texts) == np.count_nonzero(image)
    assert not any(text.get_in_layout() for text in ax.texts)


def test_confusion_counts_stay_out_of_the_layout() -> None:
    """The counts sit in their cells: the layout measures the axes' labels, not them."""
    matrix = np.arange(16).reshape(4, 4)
    ax = plots.confusion_figure(matrix, ["a", "b", "c", "d"]).axes[0]
    assert [text.get_text() for text in ax.texts] == [str(v) for v in matrix.ravel()]
    assert not any(text.get_in_layout() for text in ax.texts)


@pytest.fixture
def forkable(monkeypatch):
    """As on a 2-core Linux machine with no other Python thread running."""
    import threading

    from digitlab import engines

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(engines, "usable_cores", lambda: 2)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_png_bytes_all_draws_in_two_processes_the_same_bytes(digits, forkable, monkeypatch) -> None:
    import os

    figures = list(_figures(digits).values())[:5]
    forks: list[int] = []
    real_fork = os.fork

    def counted_fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counted_fork)
    drawn = plots.png_bytes_all(figures)
    assert forks == [1]
    # fresh figures: a second draw of one may settle its constrained layout further
    assert drawn == [plots.png_bytes(fig) for fig in list(_figures(digits).values())[:5]]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_png_bytes_all_draws_the_slow_recipes_first_and_returns_them_in_order(
        digits, forkable) -> None:
    from digitlab.drawing import Recipe

    images = digits[0][:10]
    recipes = [Recipe("confusion_figure", (np.arange(4).reshape(2, 2), ["a", "b"])),
               Recipe("digit_grid", (images,)),
               Recipe("similarity_bars", ([{"label": 3, "count": 2, "total": 10, "percent": 20.0}], "3", [str(i) for i in range(10)])),
               Recipe("digit_with_values", (images[0],))]
    assert plots.drawing_order(recipes) == [0, 3, 1, 2]
    assert plots.png_bytes_all(recipes) == [plots.png_of(recipe) for recipe in recipes]


def test_png_bytes_all_draws_the_childs_share_itself_when_the_child_fails(
        digits, forkable, monkeypatch) -> None:
    figures = list(_figures(digits).values())[:3]
    monkeypatch.setattr(plots, "_unframe", lambda data: [])  # as if the child sent nothing
    drawn = plots.png_bytes_all(figures)
    assert drawn == [plots.png_bytes(fig) for fig in list(_figures(digits).values())[:3]]


def test_png_bytes_all_never_forks_beside_another_thread(digits, monkeypatch) -> None:
    import os
    import threading

    def refused() -> int:
        raise AssertionError("forked while another thread ran")

    monkeypatch.setattr(threading, "active_count", lambda: 2)
    monkeypatch.setattr(os, "fork", refused)
    drawn = plots.png_bytes_all(list(_figures(digits).values())[:2])
    assert drawn == [plots.png_bytes(fig) for fig in list(_figures(digits).values())[:2]]


FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"]


@pytest.mark.parametrize("titles", [
    [f"{a},{b}" for a, b in zip(FASHION_NAMES, FASHION_NAMES[::-1], strict=True)],  # long
    [str(i) for i in range(10)],  # short: drawn at full size
])
def test_grid_panels_and_titles_stay_in_their_cells(titles) -> None:
    """Drawn panels do not overlap one another, nor does a title reach into its neighbour's
    cell (Fashion-MNIST's long names shrink to fit; digits keep 9 points)."""
    fig = plots.digit_grid(np.zeros((10, 28, 28), np.uint8), titles, ncols=5, suptitle="grid")
    renderer = FigureCanvasAgg(fig).get_renderer()
    cell = fig.get_size_inches()[0] * fig.dpi / 5
    drawn = [title.get_window_extent(renderer) for title in plots.panel_titles(fig)]
    assert max(box.width for box in drawn) <= cell
    for i, box in enumerate(drawn):
        column = i % 5
        assert cell * column <= box.x0
        assert box.x1 <= cell * (column + 1)
    sizes = {title.get_fontsize() for title in plots.panel_titles(fig)}
    assert sizes == ({9} if len(titles[0]) == 1 else {min(sizes)})
    assert min(sizes) >= 5
    if len(titles[0]) > 1:
        assert sizes.pop() < 9
        assert max(box.width for box in drawn) > 0.7 * cell  # shrunk to fit, not to a speck
    extents = [image.get_extent() for image in plots.panel_images(fig)]
    for i, (left, right, bottom, top) in enumerate(extents):
        assert 0 <= left < right <= fig.get_size_inches()[0]
        assert 0 <= bottom < top <= fig.get_size_inches()[1]
        assert right - left == pytest.approx(top - bottom)  # square digits stay square
        for other in extents[i + 1:]:
            assert right <= other[0] or other[1] <= left or top <= other[2] or other[3] <= bottom
    suptitle = fig.get_suptitle()
    assert suptitle == "grid"
    title_top = max(box.y1 for box in drawn)
    assert title_top < fig._suptitle.get_window_extent(renderer).y0  # titles under the suptitle


def test_pixel_arrows_point_at_the_named_pixels(digits) -> None:
    """Each arrow's head is the centre of the named pixel of its own panel's image."""
    images, _ = digits
    fig = plots.pixel_arrows(images[:3], (20, 22), (5, 7))
    panels = plots.panel_images(fig)
    heads = [arrow.xy for arrow in fig.axes[0].texts if arrow.get_gid() != plots.PANEL_TITLE]
    assert len(heads) == 2 * 3
    for i, image in enumerate(panels):
        left, right, bottom, top = image.get_extent()
        for (row, col), head in zip(((20, 22), (5, 7)), heads[2 * i: 2 * i + 2], strict=True):
            assert head[0] == pytest.approx(left + (col + 0.5) / 28 * (right - left))
            assert head[1] == pytest.approx(top - (row + 0.5) / 28 * (top - bottom))


def test_a_grid_of_wide_images_keeps_their_shape() -> None:
    """An image that is not square fills its panel's width and keeps its proportions."""
    fig = plots.digit_grid(np.zeros((2, 10, 20), np.uint8), ["a", "b"])
    left, right, bottom, top = plots.panel_images(fig)[0].get_extent()
    assert (right - left) == pytest.approx(2 * (top - bottom))
