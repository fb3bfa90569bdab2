"""One training run: data -> model -> metrics -> files in a run folder.

The command line's ``train`` is a thin shell around :func:`train`; the same
call works from Python and returns everything it measured.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.atomic import atomic_dir, check_folder_destination, write_json
from digitlab.data.dataset import Dataset
from digitlab.data.deskew import deskew_images
from digitlab.data.sources import load
from digitlab.errors import DataError, DataWarning, SettingsError, show_path
from digitlab.inspection import Inspection, inspect_model
from digitlab.io import ModelInfo, json_settings, save_model
from digitlab.models import MODELS, DigitClassifier
from digitlab.models.training import Callback
from digitlab.predict import deskews, layout_for
from digitlab.report import write_report


@dataclass
class RunConfig:
    """Every setting of a training run; written to ``config.json``."""

    data: str = "mnist-sample"
    model: str = "template"
    task: str = "all"
    image_size: int | None = None
    deskew: bool = False
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
    """Load the source, apply the task's label mapping, deskewing and the image size."""
    dataset = load(
        config.data,
        test_fraction=config.test_fraction,
        seed=config.seed,
        label_column=config.label_column,
    ).for_task(config.task)
    if config.deskew:  # at the source's resolution, before any resizing
        dataset = dataset.map_images(deskew_images, "deskewed")
    if config.image_size and config.image_size != dataset.image_shape[0]:
        from digitlab.data.preprocess import resize_images

        size = config.image_size
        dataset = dataset.map_images(
            lambda images: resize_images(images, size), f"resized to {size}x{size}"
        )
    return dataset


def data_for_model(
    info: ModelInfo,
    source: str,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str | None = None,
) -> Dataset:
    """Load ``source`` the way a saved model expects it: its task, deskewing and input size."""
    height = info.input_shape[0] if info.input_shape else None
    config = RunConfig(data=source, task=str(info.extra.get("task", "all")), image_size=height,
                       deskew=deskews(info), seed=seed, test_fraction=test_fraction,
                       label_column=label_column)
    dataset = prepare_data(config)
    if list(dataset.image_shape) != list(info.input_shape):
        raise DataError(source, f"images are {dataset.image_shape[0]}x{dataset.image_shape[1]}, "
                        f"the model takes {'x'.join(map(str, info.input_shape))}")
    return dataset


def check_known_labels(dataset: Dataset, info: ModelInfo, split: str) -> None:
    """Warn (one line, with counts) of ``split`` images whose class the model never saw;
    refuse when it saw none of them."""
    warn_unknown_labels(dataset, split, set(info.classes), "that the model never saw in training")


def check_trainable(dataset: Dataset, *, class_weight: object = None) -> None:
    """Refuse a train split of one class; warn of test classes the train split lacks,
    and of train classes far rarer than the others (``class_weight``: the model's setting).

    Found here, after loading and before any training, so the mistake costs
    seconds and reads as one line, not as a model's error deep inside ``fit``.
    """
    counts = dataset.counts("train")
    if len(counts) < 2:
        (label, count), = counts.items()
        raise DataError(dataset.name, f"the train split holds one class only ({count} images of "
                        f"{dataset.class_name(label)!r}): a classifier needs two or more")
    warn_unknown_labels(dataset, "test", set(counts), "that the train split lacks, so no model "
                        "trained on it can predict them")
    warn_rare_classes(dataset, counts, weighted=class_weight is not None)


# A class is rare below this share of the median class count. On the bundled sample
# (400 images a class) with the 7s cut down, softmax's recall on 7 fell from 0.92 to
# 0.84-0.88 with 160 sevens (40%), 0.77 with 80 (20%), 0.63 with 40 (10%) and 0.36
# with 15: 10% warns where the loss is severe and never on a one-vs-rest task such as
# "is it a 2", whose one class holds about a ninth of the images: 20% of the median
# of its two counts. A relative rule, not a count such as 20: a small set with 15
# images of every class is not imbalanced, and class weights would not help it.
RARE_CLASS_SHARE = 0.1


def warn_rare_classes(dataset: Dataset, counts: dict[int, int], *, weighted: bool = False) -> None:
    """One DataWarning naming the classes with fewer than RARE_CLASS_SHARE of the median
    class count of the train split (``counts``): a model learns to pass them over.
    ``weighted``: class weights are already set, so only more images are suggested."""
    median = float(np.median(list(counts.values())))
    rare = [(label, n) for label, n in sorted(counts.items()) if n < RARE_CLASS_SHARE * median]
    if not rare:
        return
    listed = ", ".join(f"{n}{' training images' * (i == 0)} of {dataset.class_name(label)!r}"
                       for i, (label, n) in enumerate(rare))
    its, it = ("its", "it") if len(rare) == 1 else ("their", "them")
    advice = f"more images of {it}" if weighted else f"--class-weight balanced or more images of {it}"
    warnings.warn(f"{show_path(dataset.name)}: {listed} against a median of {median:g} per class: "
                  f"{its} recall will suffer; consider {advice}", DataWarning, stacklevel=3)


def warn_unknown_labels(dataset: Dataset, split: str, known: set[int], why: str) -> None:
    """One DataWarning, with counts, for images of ``split`` whose label is not in ``known``;
    a DataError when no image of ``split`` has a known label (its figures would mean nothing)."""
    unknown = {label: n for label, n in dataset.counts(split).items() if label not in known}
    if not unknown:
        return
    listed = ", ".join(f"{n} of {dataset.class_name(label)!r}" for label, n in sorted(unknown.items()))
    total = sum(unknown.values())
    if total == len(dataset.labels(split)):
        raise DataError(dataset.name, f"no {split} image has a class the model knows ({listed})")
    warnings.warn(f"{show_path(dataset.name)}: {total} {split} images have a class {why} "
                  f"({listed})", DataWarning, stacklevel=3)


def check_saveable(model: DigitClassifier) -> None:
    """Refuse a model its own file could not hold (NaN weights after a diverged run):
    every model file digitlab writes loads again."""
    try:
        model.check_state(model.state_dict())
    except ValueError as exc:
        raise SettingsError(f"training diverged ({exc}); use a smaller learning rate") from None


def build_model(config: RunConfig) -> DigitClassifier:
    """The configured model; ``--seed`` seeds it unless an ``rng`` setting was given."""
    if config.model not in MODELS:
        raise SettingsError(f"unknown model {config.model!r}: choose from {', '.join(MODELS)}")
    cls = MODELS[config.model]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    foreign = sorted(set(config.settings) - accepted)
    if foreign:
        options = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise SettingsError(f"model {config.model!r} has no setting {options}")
    settings = dict(config.settings)
    if "rng" in accepted and settings.get("rng") is None:
        settings["rng"] = config.seed
    return cls(**settings)


def fit_model(
    model: DigitClassifier,
    dataset: Dataset,
    *,
    callback: Callback | None = None,
) -> DigitClassifier:
    """Fit on the train split, passing a progress callback and the test split for
    learning curves to models whose ``fit`` takes them."""
    accepted = inspect.signature(model.fit).parameters
    extra: dict[str, Any] = {}
    if "callback" in accepted:
        extra["callback"] = callback
    if "eval_set" in accepted:
        extra["eval_set"] = (dataset.features("test"), dataset.test_labels)
    return model.fit(dataset.features("train"), dataset.train_labels, **extra)


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    on_stage: Callable[[str], None] | None = None,
    callback: Callback | None = None,
) -> RunResult:
    """Run ``config``; when ``out`` is given write the model and its figures there.

    ``out`` receives ``model.safetensors``, ``metrics.json``, ``config.json``,
    ``figures/*.png`` and ``report.html``.
    """
    stage = on_stage or (lambda _name: None)
    if out is not None:  # a run folder that cannot be written is found now, not after training
        check_folder_destination(out, merge=True)
    stage("loading data")
    dataset = prepare_data(config)
    check_trainable(dataset, class_weight=config.settings.get("class_weight"))
    model = build_model(config)
    stage(f"training {config.model}")
    started = time.perf_counter()
    fit_model(model, dataset, callback=callback)
    seconds = time.perf_counter() - started
    check_saveable(model)
    stage("evaluating")
    history = getattr(model, "history_", None) or {}
    inspection = inspect_model(model, dataset, history=history, figures=out is not None)
    measured: dict[str, Any] = dict(inspection.evaluation)
    measured["analysis"] = inspection.analysis
    measured["seconds"] = {"fit": seconds}
    measured["model"] = config.model
    measured["interrupted"] = bool(getattr(model, "interrupted_", False))
    if history:
        measured["history"] = history
    measured["data"] = dataset.summary()
    if out is not None:
        stage("writing the run folder")
        with atomic_dir(out, merge=True) as folder:
            write_run_folder(folder, config, dataset, model, measured, inspection)
    return RunResult(config, dataset, model, measured, seconds)


def write_run_folder(
    out: Path,
    config: RunConfig,
    dataset: Dataset,
    model: DigitClassifier,
    measured: dict[str, Any],
    inspection: Inspection,
) -> None:
    """Write the model, ``config.json``, ``metrics.json``, figures and report into ``out``."""
    save_model(
        out / "model.safetensors",
        model,
        input_shape=dataset.image_shape,
        class_names=dataset.class_names,
        preprocessing=preprocessing_of(config, dataset),
        data_fingerprint=dataset.fingerprint(),
        extra={"task": config.task, "test_accuracy": measured["test"]["accuracy"]},
    )
    # every setting used: the run's, and the model's full settings with their defaults
    write_json(out / "config.json", {**asdict(config), "settings": json_settings(config.settings),
                                     "model_settings": json_settings(model.get_params())})
    write_json(out / "metrics.json", measured)
    write_report(out, title=f"{config.model} on {dataset.name} ({config.task})",
                 data_summary=dataset.summary(), model_summary=model.summary(),
                 inspection=inspection)


def preprocessing_of(config: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """How raw images become this model's input, stored in the model file."""
    return {
        "image_shape": list(dataset.image_shape),
        "resized_to": config.image_size,
        "deskew": config.deskew,
        "features": "pixel / 255, flattened row by row",
        "ink": "255 on 0 background",
        "user_images": f"MNIST-style normalisation, layout {layout_for(dataset.image_shape)!r}",
    }
