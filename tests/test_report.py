"""The report: one self-contained page with every section and figure."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from digitlab.cli import main
from digitlab.inspection import inspect_model
from digitlab.models import Template
from digitlab.report import render_html, write_report


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
