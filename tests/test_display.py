"""What shows itself in a notebook: Dataset, model summaries, inspections, digit grids."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import digitlab
from digitlab import plots
from digitlab.data.dataset import Dataset
from digitlab.display import figure_html, show_digits, show_predictions
from digitlab.inspection import inspect_model
from digitlab.models import (
    MLP,
    GuessAndCheck,
    Majority,
    Perceptron,
    RandomScores,
    Softmax,
    Template,
)
from digitlab.models.summary import ModelSummary


@pytest.fixture(scope="module")
def small() -> Dataset:
    return digitlab.load("mnist-sample").take("train", 0, 600).take("test", 0, 200)


def _pngs(page: str) -> list[Image.Image]:
    chunks = page.split("data:image/png;base64,")[1:]
    return [Image.open(io.BytesIO(base64.b64decode(chunk.split("'")[0]))) for chunk in chunks]


def test_dataset_repr_is_one_short_line(small) -> None:
    text = repr(small)
    assert len(text) < 200
    assert "\n" not in text
    assert "mnist-sample" in text
    assert "28x28" in text
    assert "train=600" in text
    assert "test=200" in text
    assert "array" not in text


def test_dataset_html_counts_every_class_and_split_and_shows_random_digits(small) -> None:
    carved = small.with_validation(0.2, seed=0)
    page = carved._repr_html_()
    for split in ("train", "validation", "test"):
        assert f"<th>{split}</th>" in page
    for label, count in carved.counts("train").items():
        assert f"<td>{label}</td><td>{count}</td><td>{carved.counts('validation')[label]}</td>" in page
    (grid,) = _pngs(page)
    assert grid.width >= 300


def test_show_digits_draws_per_class_rows_not_stamps(small) -> None:
    fig = show_digits(small, per_class=3, seed=0)
    assert isinstance(fig, Figure)
    panels = plots.panel_images(fig)
    assert len(panels) == 3 * small.n_classes
    assert [title.get_text() for title in plots.panel_titles(fig)[:3]] == ["0", "0", "0"]
    one = show_digits(small.keep_classes([1]), per_class=1)
    assert one.get_size_inches()[0] >= 3.5  # a lone digit is drawn large enough to read


def test_show_predictions_marks_mistakes(small) -> None:
    model = Template().fit(small.features("train"), small.train_labels)
    fig = show_predictions(model, small, n=12, seed=0)
    assert len(plots.panel_images(fig)) == 12
    mistakes = show_predictions(model, small, n=5, mistakes_only=True)
    titles = plots.panel_titles(mistakes)
    assert len(titles) == 5
    assert all(a != b for a, b in (t.get_text().split(",") for t in titles))
    assert all(title.get_color() == "#c0392b" for title in titles)


def test_figure_html_embeds_a_png() -> None:
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    (png,) = _pngs(figure_html(fig, "a <line>"))
    assert png.size == (200, 100)
    assert "a &lt;line&gt;" in figure_html(fig, "a <line>")


def test_summary_is_a_dict_that_prints_as_a_table(small) -> None:
    X, y = small.features("train"), small.train_labels
    summary = Softmax(random_state=0).fit(X, y).summary()
    assert isinstance(summary, ModelSummary)
    assert isinstance(summary, dict)
    assert summary["n_parameters"] == 784 * 10 + 10
    assert json.loads(json.dumps(summary)) == summary.to_dict()
    text = str(summary)
    assert "Linear 784 -> 10" in text
    assert "7,850" in text
    assert "Total learned parameters: 7,850" in text
    assert repr(summary) == text
    assert "<table>" in summary._repr_html_()
    assert "Linear 784 -&gt; 10" in summary._repr_html_()


def test_parameter_counts_say_what_they_count(small) -> None:
    X, y = small.features("train"), small.train_labels
    is2 = (y == 2).astype(np.int64)
    guess = GuessAndCheck(n_candidates=20, random_state=0).fit(X, is2).summary()
    assert guess["n_parameters"] == 784 + 1
    assert guess["layers"][0]["weight_shape"] == [784]
    assert guess["layers"][0]["bias_shape"] == []
    assert "Stored, not learned: best_candidate_" in str(guess)
    random = RandomScores(random_state=7).fit(X, y).summary()
    assert random["n_parameters"] == 0
    assert random["stored"] == {"seed_": 7}
    assert "seed_ = 7" in str(random)
    assert Majority().fit(X, y).summary()["n_parameters"] == 10
    perceptron = Perceptron(random_state=0).fit(X, is2).summary()
    assert [row["name"] for row in perceptron["layers"]] == ["linear", "temperature_"]
    template = Template().fit(X, y).summary()
    assert template["layers"][0]["type"] == "average image per class"


def test_mlp_summary_rows_have_types_and_output_shapes(small) -> None:
    model = MLP(hidden=(16,), activation="sigmoid", epochs=1, random_state=0)
    summary = model.fit(small.features("train"), small.train_labels).summary()
    assert [row["type"] for row in summary["layers"]] == ["Dense 784 -> 16, sigmoid",
                                                          "Dense 16 -> 10, softmax"]
    assert [row["output_shape"] for row in summary["layers"]] == [[16], [10]]


def test_inspection_shows_its_numbers_and_figures(small) -> None:
    model = Softmax(random_state=0).fit(small.features("train"), small.train_labels)
    inspection = inspect_model(model, small)
    page = inspection._repr_html_()
    accuracy = inspection.evaluation["test"]["accuracy"]
    assert f"{accuracy:.2%}" in page
    assert "<td>test</td>" in page
    assert len(_pngs(page)) == len(inspection.figures.items) > 3
    assert inspection.readings[0] in page.replace("&#x27;", "'")
    assert "test accuracy" in repr(inspection)
    assert len(repr(inspection)) < 200


def test_show_digits_refuses_no_digits_per_class(small) -> None:
    with pytest.raises(ValueError, match="per_class must be at least 1"):
        show_digits(small, per_class=0)
