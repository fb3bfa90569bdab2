"""The report: one self-contained page with every section and figure."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from digitlab import metrics, plots
from digitlab.cli import main
from digitlab.errors import SettingsError
from digitlab.inspection import inspect_model
from digitlab.models import GuessAndCheck, RandomScores, Template
from digitlab.report import describe_parameters, render_html, write_report


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.external: list[str] = []
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])
        if tag not in ("img", "meta", "br"):
            self.open_tags.append(tag)

    def handle_endtag(self, tag):
        assert self.open_tags, f"unbalanced </{tag}>"
        assert self.open_tags[-1] == tag, f"unbalanced </{tag}>"
        self.open_tags.pop()


def _parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    collector.close()
    assert collector.open_tags == []
    return collector


@pytest.fixture(scope="module")
def binary_run(sample):
    data = sample.for_task("is-2").take("train", 0, 800).take("test", 0, 200)
    model = Template(metric="euclidean").fit(data.features("train"), data.train_labels)
    return model, data, inspect_model(model, data)


def test_report_holds_every_section_and_figure(binary_run, tmp_path) -> None:
    model, data, inspection = binary_run
    path = write_report(tmp_path, title="two detector", data_summary=data.summary(),
                        model_summary=model.summary(), inspection=inspection)
    page = path.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert {"data", "model", "metrics", "reading", "figures"} <= parsed.ids
    names = inspection.figures.names()
    assert {"weights", "pixel_arrows", "confusion", "worst_written", "examples"} <= set(names)
    assert {f"fig-{name}" for name in names} <= parsed.ids
    assert len(parsed.images) == len(names)
    assert parsed.external == []  # self-contained: nothing from the network
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            assert image.format == "PNG"
    for name in names:
        assert (tmp_path / "figures" / f"{name}.png").is_file()
    assert "majority baseline" in page
    assert "pushes the model hardest towards" in page  # the plain-language reading


def test_render_escapes_text(binary_run) -> None:
    model, data, inspection = binary_run
    summary = dict(data.summary(), name="<script>alert(1)</script>")
    page = render_html(title="<b>x</b>", data_summary=summary, model_summary=model.summary(),
                       inspection=inspection)
    assert "<script>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_train_writes_report_and_extended_metrics(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist-sample", "--task", "is-2", "--metric", "euclidean",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("accuracy", "majority_baseline", "balanced_accuracy", "per_class", "confusion", "costs"):
        assert key in test, key
    assert test["majority_baseline"] == pytest.approx(0.9)
    assert len(metrics["analysis"]["most_positive_pixel"]) == 2
    assert (out / "report.html").is_file()
    assert (out / "figures" / "pixel_arrows.png").is_file()
    assert "report.html" in capsys.readouterr().out


def test_evaluate_on_a_range_and_inspect(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--metric", "euclidean", "--out", str(out),
                 "--quiet"]) == 0
    model = str(out / "model.safetensors")
    assert main(["evaluate", model, "--data", "digits", "--start", "0", "--count", "500",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    test = result["evaluation"]["test"]
    assert test["count"] == 500
    assert 0.8 < test["accuracy"] < 1.0
    assert result["analysis"]["mistaken_for"]["target"] == 5
    assert main(["evaluate", model, "--data", "digits", "--start", "790", "--count", "50"]) == 2
    assert "runs past" in capsys.readouterr().err
    assert main(["inspect", model, "--data", "digits", "--out", str(tmp_path / "look")]) == 0
    assert (tmp_path / "look" / "report.html").is_file()
    assert (tmp_path / "look" / "figures" / "similarity.png").is_file()
    assert main(["evaluate", str(tmp_path / "missing.safetensors")]) == 2


def _sorted_by_class(data):
    """The test split reordered class by class, as a Kaggle tree or an .npz lists it."""
    order = np.argsort(data.test_labels, kind="stable")
    return data.replace(test_images=data.test_images[order], test_labels=data.test_labels[order])


def _figure(inspection, name):
    return next(figure for figure_name, _, figure in inspection.figures.items if figure_name == name)


def _titles(figure):
    return [title.get_text() for title in plots.panel_titles(figure)]


def test_binary_examples_show_both_classes_on_class_sorted_data(binary_run) -> None:
    model, data, _ = binary_run
    inspection = inspect_model(model, _sorted_by_class(data), seed=3)
    arrows = _titles(_figure(inspection, "pixel_arrows"))
    assert sorted(arrows) == ["2", "2", "2", "not 2", "not 2", "not 2"]
    examples = [title.split(",")[0] for title in _titles(_figure(inspection, "examples"))]
    assert examples.count("2") == examples.count("not 2") == 10
    again = inspect_model(model, _sorted_by_class(data), seed=4, splits=("test",))
    assert _titles(_figure(again, "examples")) != _titles(_figure(inspection, "examples"))
    weights = _figure(inspection, "weights").axes[0]
    legend = [text.get_text() for text in weights.get_legend().get_texts()]
    row, col = inspection.analysis["most_positive_pixel"]
    assert legend[0] == f"most positive ({row}, {col})"


@pytest.fixture(scope="module")
def ten_digit_run(sample):
    data = sample.take("train", 0, 1000).take("test", 0, 300)
    return Template().fit(data.features("train"), data.train_labels), data


def test_target_digit_ranks_its_own_share_first(ten_digit_run) -> None:
    model, data = ten_digit_run
    default = inspect_model(model, data, splits=("test",), figures=False)
    assert default.analysis["mistaken_for"]["target"] == 5
    aimed = inspect_model(model, data, splits=("test",), figures=False, target_digit=3)
    ranking = aimed.analysis["mistaken_for"]["ranking"]
    assert ranking[0]["label"] == 3
    assert len(ranking) == 10
    threes = data.test_labels == 3
    read_as_3 = model.predict(data.features("test")) == 3
    assert ranking[0]["count"] == int(np.sum(read_as_3 & threes))
    assert ranking[0]["total"] == int(threes.sum())
    assert any("were read as 3" in text for text in aimed.readings)


def test_worst_digit_shows_only_that_digit(ten_digit_run) -> None:
    model, data = ten_digit_run
    inspection = inspect_model(model, data, splits=("test",), worst_digit=8)
    worst = inspection.analysis["worst_written"]
    assert len(worst) == 10
    assert {entry["label"] for entry in worst} == {8}
    p_true = [entry["p_true"] for entry in worst]
    assert p_true == sorted(p_true)
    titles = _titles(_figure(inspection, "worst_written"))
    assert len(titles) == 10
    assert all(title.startswith("8,") for title in titles)
    with pytest.raises(SettingsError, match="--worst-digit 12 is not a class"):
        inspect_model(model, data, splits=("test",), figures=False, worst_digit=12)


def test_report_shows_the_interval_and_what_the_parameters_are(binary_run) -> None:
    model, data, inspection = binary_run
    test = inspection.evaluation["test"]
    low, high = test["accuracy_ci"]
    assert low < test["accuracy"] < high
    page = render_html(title="t", data_summary=data.summary(), model_summary=model.summary(),
                       inspection=inspection)
    assert "95% interval" in page
    assert metrics.format_interval(test["accuracy_ci"]) in page
    assert f"{test['costs']['cross_entropy']:.3g}" in page


def test_describe_parameters_says_what_is_counted(sample) -> None:
    data = sample.for_task("is-2").take("train", 0, 300)
    guess = GuessAndCheck(n_candidates=20, random_state=0).fit(data.features("train"), data.train_labels)
    text = describe_parameters(guess.summary())
    assert text.startswith("785 learned parameters (coef_ 784, intercept_ 1)")
    assert "not learned: best_candidate_, best_train_accuracy_" in text
    random = RandomScores(random_state=1).fit(data.features("train"), data.train_labels)
    assert describe_parameters(random.summary()) == "No learned parameters (a seed: 1)."


def test_cli_aims_the_analysis_and_refuses_a_digit_not_in_the_task(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--out", str(out), "--quiet",
                 "--target-digit", "3", "--worst-digit", "8"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["analysis"]["mistaken_for"]["ranking"][0]["label"] == 3
    assert {entry["label"] for entry in saved["analysis"]["worst_written"]} == {8}
    assert len(saved["test"]["accuracy_ci"]) == 2
    model = str(out / "model.safetensors")
    assert main(["evaluate", model, "--data", "digits", "--json", "--target-digit", "7"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analysis"]["mistaken_for"]["ranking"][0]["label"] == 7
    assert main(["evaluate", model, "--data", "digits"]) == 0
    assert "95% interval" in capsys.readouterr().out
    bad = tmp_path / "bad"
    assert main(["train", "--data", "digits", "--task", "is-2", "--out", str(bad), "--quiet",
                 "--target-digit", "2"]) == 2
    assert "--target-digit 2 is not a class of this task (classes: 0, 1)" in capsys.readouterr().err
    assert not bad.exists()  # refused before training, nothing written


NETWORK_FIGURES = {"cnn": {"cnn_filters", "cnn_activations", "attributions"},
                   "mlp": {"hidden_weights", "attributions"}}


@pytest.mark.parametrize(("kind", "settings"), [
    ("cnn", ["--epochs", "1", "--width", "2", "--dense", "8"]),
    ("mlp", ["--hidden", "16", "--epochs", "3"]),
])
def test_network_runs_show_what_they_learned_and_why(tmp_path, kind, settings) -> None:
    if kind == "cnn":
        pytest.importorskip("torch")
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", kind, *settings, "--out", str(out),
                 "--quiet"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    ids = _parse(page).ids
    for name in NETWORK_FIGURES[kind]:
        assert f"fig-{name}" in ids, name
        assert (out / "figures" / f"{name}.png").is_file(), name
    others = set().union(*NETWORK_FIGURES.values()) - NETWORK_FIGURES[kind]
    assert not {f"fig-{name}" for name in others} & ids
    assert not any((out / "figures" / f"{name}.png").exists() for name in others)
    assert "red pixels pushed it towards its answer" in page


def test_models_without_layers_or_gradients_get_no_network_figures(binary_run) -> None:
    _, _, inspection = binary_run  # a template
    assert not set().union(*NETWORK_FIGURES.values()) & set(inspection.figures.names())


def test_cnn_activations_show_one_random_digit_per_class(sample) -> None:
    pytest.importorskip("torch")
    from digitlab.models.cnn import CNN

    data = sample.take("train", 0, 300).take("test", 0, 100)
    model = CNN(epochs=1, width=2, dense=8, random_state=0).fit(data.features("train"),
                                                                 data.train_labels)
    rows = {}
    for seed in (0, 1):
        figure = _figure(inspect_model(model, data, splits=("test",), seed=seed), "cnn_activations")
        names = [text.get_text() for text in figure.axes[0].texts if text.get_gid() == plots.ROW_LABEL]
        assert sorted(names) == [str(d) for d in range(10)]
        digits = plots.panel_images(figure)[::3]  # each row: the digit, then 2 channels
        rows[seed] = [image.get_array().tobytes() for image in digits]
    assert rows[0] != rows[1]  # drawn at random with the seed


def test_cnn_attributions_fall_back_to_occlusion_without_captum(sample, monkeypatch) -> None:
    pytest.importorskip("torch")
    import importlib.util

    from digitlab.inspection import attribution_method
    from digitlab.models.cnn import CNN

    model = CNN(epochs=1, width=1, dense=4, random_state=0).fit(
        sample.features("train")[:100], sample.train_labels[:100])
    assert attribution_method(model) == "integrated-gradients"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "captum" else real(name, *a))
    assert attribution_method(model) == "occlusion"


def test_majority_run_builds_no_float32_copy_of_the_images(sample, tmp_path, monkeypatch) -> None:
    """A model that reads no pixels gets zeros that take no memory, and the same figures
    as on the real features; every other model gets the real ones."""
    from digitlab.data.dataset import Dataset
    from digitlab.inspection import features_for
    from digitlab.models import Majority
    from digitlab.run import RunConfig, train

    data = sample.take("train", 0, 600).take("test", 0, 200)
    blank = features_for(Majority(), data, "train")
    assert blank.shape == data.features("train").shape
    assert blank.dtype == np.float32
    assert blank.strides == (0, 4)
    assert not blank.any()
    np.testing.assert_array_equal(features_for(Template(), data, "test"), data.features("test"))

    def refused(self, split):
        raise AssertionError(f"features({split!r}) built for a model that reads no pixels")

    with monkeypatch.context() as patched:
        patched.setattr(Dataset, "features", refused)
        result = train(RunConfig(model="majority"), tmp_path / "run")
    assert (tmp_path / "run" / "report.html").is_file()
    dataset = result.dataset
    real = Majority().fit(dataset.features("train"), dataset.train_labels)
    np.testing.assert_array_equal(real.class_prior_, result.model.class_prior_)
    wanted = inspect_model(real, dataset, figures=False).evaluation
    assert json.dumps(result.metrics["test"], sort_keys=True) == json.dumps(wanted["test"], sort_keys=True)
    assert json.dumps(result.metrics["train"], sort_keys=True) == json.dumps(wanted["train"], sort_keys=True)
