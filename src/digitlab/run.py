"""One training run: data -> model -> metrics -> files in a run folder.

The command line's ``train`` is a thin shell around :func:`train`; the same
call works from Python and returns everything it measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from digitlab import metrics
from digitlab.atomic import write_json
from digitlab.data.dataset import Dataset
from digitlab.data.sources import load
from digitlab.errors import SettingsError
from digitlab.models import MODELS, DigitClassifier


@dataclass
class RunConfig:
    """Every setting of a training run; written to ``config.json``."""

    data: str = "mnist-sample"
    model: str = "template"
    task: str = "all"
    image_size: int | None = None
    seed: int = 0
    test_fraction: float = 0.2
    label_column: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    config: RunConfig
    dataset: Dataset
    model: DigitClassifier
    metrics: dict[str, Any]
    seconds: float


def prepare_data(config: RunConfig) -> Dataset:
    """Load the source, apply the task's label mapping and the image size."""
    dataset = load(
        config.data,
        test_fraction=config.test_fraction,
        seed=config.seed,
        label_column=config.label_column,
    ).for_task(config.task)
    if config.image_size and config.image_size != dataset.image_shape[0]:
        from digitlab.data.preprocess import resize_images

        size = config.image_size
        dataset = dataset.map_images(
            lambda images: resize_images(images, size), f"resized to {size}x{size}"
        )
    return dataset


def build_model(config: RunConfig) -> DigitClassifier:
    if config.model not in MODELS:
        raise SettingsError(f"unknown model {config.model!r}: choose from {', '.join(MODELS)}")
    return MODELS[config.model](**config.settings)


def evaluate(model: DigitClassifier, dataset: Dataset) -> dict[str, Any]:
    """Train and test accuracy, with the majority-class baseline beside the test figure."""
    result: dict[str, Any] = {}
    for split in ("train", "test"):
        predicted = model.predict(dataset.features(split))
        result[split] = {"accuracy": metrics.accuracy(dataset.labels(split), predicted)}
    result["test"]["majority_baseline"] = metrics.majority_baseline(
        dataset.train_labels, dataset.test_labels
    )
    return result


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    on_stage: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``config``; when ``out`` is given write ``metrics.json`` and ``config.json`` there."""
    stage = on_stage or (lambda _name: None)
    stage("loading data")
    dataset = prepare_data(config)
    model = build_model(config)
    stage(f"training {config.model}")
    started = time.perf_counter()
    model.fit(dataset.features("train"), dataset.train_labels)
    seconds = time.perf_counter() - started
    stage("evaluating")
    measured = evaluate(model, dataset)
    measured["seconds"] = {"fit": seconds}
    measured["model"] = config.model
    measured["data"] = dataset.summary()
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", asdict(config))
        write_json(out / "metrics.json", measured)
    return RunResult(config, dataset, model, measured, seconds)
