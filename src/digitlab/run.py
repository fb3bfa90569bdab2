"""One training run: data -> model -> metrics -> files in a run folder.

The command line's ``train`` is a thin shell around :func:`train`; the same
call works from Python and returns everything it measured.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.atomic import atomic_dir, check_folder_destination, write_json
from digitlab.catalog import DEFAULT_VALIDATION, MODEL_SETTINGS, model_kinds
from digitlab.data.dataset import Dataset
from digitlab.data.deskew import deskew_images
from digitlab.data.sources import load
from digitlab.errors import DataError, DataWarning, SettingsError, show_path

# The models, their evaluation and the report import scikit-learn and SciPy (0.7 s):
# they are imported where used, so that a run loads its data first and its drawing
# process starts on the data's own figures meanwhile (see train).
if TYPE_CHECKING:
    from digitlab.calibration import Calibration
    from digitlab.drawing import Drawer
    from digitlab.inspection import Inspection
    from digitlab.io import ModelInfo
    from digitlab.models import DigitClassifier
    from digitlab.models.training import Callback

MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few hundred bytes


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
    validation_fraction: float | None = None  # None: the model's default_validation
    label_column: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    labels: str | None = None  # a flat folder's labels file, when not its labels.csv
    normalise: bool = False  # every image normalised as predict normalises a picture


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
        labels=config.labels,
        # straight to the model's size, as predict normalises a picture to it
        normalise=(config.image_size or True) if config.normalise else False,
    ).for_task(config.task)
    if config.deskew:  # at the source's resolution, before any resizing
        dataset = dataset.map_images(deskew_images, "deskewed")
    if config.image_size and config.image_size != dataset.image_shape[0]:
        dataset = dataset.resized(config.image_size)
    return dataset


def data_for_model(
    info: ModelInfo,
    source: str,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str | None = None,
    labels: str | None = None,
) -> Dataset:
    """Load ``source`` the way a saved model expects it: its task, normalisation, deskewing
    and input size; warn (one line) when it still looks prepared otherwise than its training data."""
    from digitlab.predict import deskews
    from digitlab.preparation import normalises, warn_if_prepared_otherwise

    height = info.input_shape[0] if info.input_shape else None
    config = RunConfig(data=source, task=str(info.extra.get("task", "all")), image_size=height,
                       deskew=deskews(info), seed=seed, test_fraction=test_fraction,
                       label_column=label_column, labels=labels, normalise=normalises(info))
    dataset = prepare_data(config)
    if list(dataset.image_shape) != list(info.input_shape):
        raise DataError(source, f"images are {dataset.image_shape[0]}x{dataset.image_shape[1]}, "
                        f"the model takes {'x'.join(map(str, info.input_shape))}")
    warn_if_prepared_otherwise(info, dataset.train_images, dataset.test_images, where=source)
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


def validation_fraction_of(config: RunConfig) -> float:
    """The share of train images held out as validation: ``--validation-fraction``, or the
    model's own default (0.1 for every model that chooses anything on it, 0 for the
    baselines, which choose nothing)."""
    fraction = config.validation_fraction
    if fraction is None:
        return DEFAULT_VALIDATION.get(config.model, 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise SettingsError(f"validation fraction must be at least 0 and below 1, got {fraction!r}")
    return float(fraction)


def start_heavy_imports() -> Callable[[], None]:
    """Start importing the models and their evaluation (scikit-learn, SciPy: 0.4-0.7 s) in a
    thread of their own, at the bottom of a fresh frame stack; returns the function that
    waits for it (and re-raises what the import raised).

    The caller may meanwhile do work that runs outside the GIL for long stretches (hashing
    big arrays): work in many short Python steps would wait for the GIL at each.

    CPython 3.11 keeps frames in 16 KB chunks and frees a chunk as soon as it empties:
    a loop whose calls cross a chunk's end maps and unmaps memory on every call. How
    deep the import runs decides whether SciPy's import-time docstring parsing does
    that: under ``python -m digitlab.cli`` it did, taking 0.35 s longer (95,000 page
    faults instead of 39,000) than under the ``digitlab`` script. A new thread's stack
    starts empty, so the import runs at the same depth however digitlab was started.
    """
    import importlib
    import threading

    failure: list[BaseException] = []

    def work() -> None:
        try:
            for name in ("digitlab.models", "digitlab.inspection"):
                importlib.import_module(name)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name="digitlab-imports")
    thread.start()

    def wait() -> None:
        thread.join()
        if failure:
            raise failure[0]

    return wait


def check_model_settings(config: RunConfig) -> None:
    """Refuse an unknown model, or a setting it does not have, without importing it
    (from :mod:`digitlab.catalog`, tested equal to the models' own settings)."""
    kinds = model_kinds()
    if config.model not in kinds:
        raise SettingsError(f"unknown model {config.model!r}: choose from {', '.join(kinds)}")
    foreign = sorted(set(config.settings) - set(MODEL_SETTINGS[config.model]))
    if foreign:
        options = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise SettingsError(f"model {config.model!r} has no setting {options}")


def build_model(config: RunConfig) -> DigitClassifier:
    """The configured model; ``--seed`` seeds it unless a ``random_state`` setting was given."""
    from digitlab.models import MODELS

    check_model_settings(config)
    settings = dict(config.settings)
    if "random_state" in MODEL_SETTINGS[config.model] and settings.get("random_state") is None:
        settings["random_state"] = config.seed
    return MODELS[config.model](**settings)


def fit_model(
    model: DigitClassifier,
    dataset: Dataset,
    *,
    callback: Callback | None = None,
) -> DigitClassifier:
    """Fit on the train split, passing a progress callback and the validation split
    (for learning curves, early stopping and the kept epoch) to models whose
    ``fit`` takes them. The test split is never passed: nothing is chosen on it."""
    from digitlab.inspection import features_for

    accepted = inspect.signature(model.fit).parameters
    extra: dict[str, Any] = {}
    if "callback" in accepted:
        extra["callback"] = callback
    if "eval_set" in accepted and "validation" in dataset.splits:
        extra["eval_set"] = (features_for(model, dataset, "validation"), dataset.labels("validation"))
    return model.fit(features_for(model, dataset, "train"), dataset.train_labels, **extra)


def calibrate_on_validation(model: DigitClassifier, dataset: Dataset) -> Calibration | None:
    """The model's temperature, fitted on the validation split; None when the run has none."""
    if "validation" not in dataset.splits:
        return None
    from digitlab.calibration import calibrate
    from digitlab.inspection import features_for

    return calibrate(model, features_for(model, dataset, "validation"), dataset.labels("validation"))


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    on_stage: Callable[[str], None] | None = None,
    callback: Callback | None = None,
    target_digit: int | None = None,
    worst_digit: int | None = None,
    keep_existing: bool = False,
    drawer: Drawer | None = None,
) -> RunResult:
    """Run ``config``; when ``out`` is given write the model and its figures there.

    ``out`` written before is refreshed file by file, or with ``keep_existing``
    kept whole (see :func:`digitlab.atomic.atomic_dir`): a sweep's run folder
    may have a second writer of the same run.

    ``target_digit`` and ``worst_digit`` aim the analysis (see
    :func:`digitlab.inspection.inspect_model`); the example digits are drawn with the seed.

    ``out`` receives ``model.safetensors``, ``metrics.json``, ``config.json``,
    ``figures/*.png`` and ``report.html``; ``drawer`` (see :mod:`digitlab.drawing`)
    draws its figures in a process started before.
    """
    stage = on_stage or (lambda _name: None)
    if out is not None:  # a run folder that cannot be written is found now, not after training
        check_folder_destination(out, merge=True)
    fraction = validation_fraction_of(config)  # a bad setting is refused before loading
    check_model_settings(config)
    stage("loading data")
    dataset = prepare_data(config)
    check_trainable(dataset, class_weight=config.settings.get("class_weight"))
    dataset = dataset.with_validation(fraction, config.seed)
    early_figures = None
    if drawer is not None and out is not None:
        # Drawn on the second core while this one imports the model and trains it.
        from digitlab.data_figures import data_figures

        early_figures = data_figures(dataset, dataset.splits[-1])
        drawer.submit([recipe for _, recipe in early_figures.values()], background=True)
    wait_for_imports = start_heavy_imports()
    # Hashing 50 MB of images releases the GIL for the whole buffer, so it runs beside
    # the import (loading the data beside it did not: its many short steps each waited
    # for the GIL the import held).
    fingerprint = dataset.fingerprint() if out is not None else ""
    wait_for_imports()
    from digitlab.inspection import check_analysis_digits, inspect_model

    model = build_model(config)
    # a digit to aim the analysis at is checked now, not after training
    check_analysis_digits(dataset.classes, target_digit=target_digit, worst_digit=worst_digit)
    stage(f"training {config.model}")
    started = time.perf_counter()
    fit_model(model, dataset, callback=callback)
    seconds = time.perf_counter() - started
    check_saveable(model)
    calibration = calibrate_on_validation(model, dataset)
    stage("evaluating")
    history = getattr(model, "history_", None) or {}
    inspection = inspect_model(model, dataset, history=history, figures=out is not None,
                               splits=dataset.splits, calibration=calibration,
                               target_digit=target_digit, worst_digit=worst_digit, seed=config.seed,
                               early_figures=early_figures)
    if drawer is not None:  # drawn while the model and its figures are written
        drawer.submit(inspection.figures.recipes())
    measured: dict[str, Any] = dict(inspection.evaluation)
    measured["analysis"] = inspection.analysis
    measured["seconds"] = {"fit": seconds}
    measured["model"] = config.model
    measured["interrupted"] = bool(getattr(model, "interrupted_", False))
    if history:
        measured["history"] = history
    measured["data"] = dataset.summary()
    if calibration is not None:
        measured["calibration"] = calibration.to_metadata()
    if out is not None:
        stage("writing the run folder")
        with atomic_dir(out, merge=True, keep_existing=keep_existing) as folder:
            write_run_folder(folder, config, dataset, model, measured, inspection, drawer=drawer,
                             data_fingerprint=fingerprint)
    return RunResult(config, dataset, model, measured, seconds)


def write_run_folder(
    out: Path,
    config: RunConfig,
    dataset: Dataset,
    model: DigitClassifier,
    measured: dict[str, Any],
    inspection: Inspection,
    *,
    drawer: Drawer | None = None,
    data_fingerprint: str | None = None,
) -> None:
    """Write the model, ``config.json``, ``metrics.json``, figures and report into ``out``
    (``data_fingerprint``: ``dataset.fingerprint()``, when the caller has it already)."""
    from digitlab.io import json_settings, save_model
    from digitlab.report import write_report

    save_model(
        out / "model.safetensors",
        model,
        input_shape=dataset.image_shape,
        class_names=dataset.class_names,
        preprocessing=preprocessing_of(config, dataset),
        data_fingerprint=data_fingerprint or dataset.fingerprint(),
        extra={"task": config.task, "test_accuracy": measured["test"]["accuracy"],
               "provenance": provenance_of(config, dataset, model, measured)},
        calibration=inspection.calibration,
    )
    # every setting used: the run's (the validation share resolved), and the model's full
    # settings with their defaults; `digitlab train --config` replays them
    resolved = dataclasses.replace(config, validation_fraction=validation_fraction_of(config))
    write_json(out / "config.json", {**asdict(resolved), "settings": json_settings(config.settings),
                                     "model_settings": json_settings(model.get_params())})
    write_json(out / "metrics.json", measured)
    write_report(out, title=f"{config.model} on {dataset.name} ({config.task})",
                 data_summary=dataset.summary(), model_summary=model.summary(),
                 inspection=inspection, drawer=drawer)


def provenance_of(
    config: RunConfig, dataset: Dataset, model: DigitClassifier, measured: dict[str, Any]
) -> dict[str, Any]:
    """Where a model came from, stored in its file and shown by ``GET /model``: the data,
    how it was split, the class counts, the kept epoch and its validation figures, when
    and with which libraries."""
    history = getattr(model, "history_", None) or {}
    kept = getattr(model, "kept_epoch_", None)
    kept_figures = {key: values[kept - 1] for key, values in history.items()
                    if key.startswith("val_") and kept and len(values) >= kept}
    return {
        "data": config.data,
        "split": {"seed": config.seed, "test_fraction": config.test_fraction,
                  "validation_fraction": validation_fraction_of(config),
                  "notes": list(dataset.notes)},
        "class_counts": {split: {dataset.class_name(label): n for label, n in dataset.counts(split).items()}
                         for split in dataset.splits},
        "kept_epoch": kept,
        "kept_epoch_validation": kept_figures,
        "validation": {key: measured["validation"][key] for key in ("accuracy", "balanced_accuracy")}
                      if "validation" in measured else None,
        "created": created_timestamp(),
        "versions": library_versions(),
    }


def created_timestamp() -> str:
    """Now in UTC (ISO 8601), or ``SOURCE_DATE_EPOCH`` when set, the reproducible-builds
    convention: a replayed run then writes a byte-identical model file."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else datetime.now(timezone.utc)
    return moment.isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a model's figures depend on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("digitlab", "numpy", "scikit-learn", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """The :class:`RunConfig` of a run's ``config.json``, to replay it: the same settings,
    the model's full settings included, give the same model file."""
    from digitlab.data.files import read_file
    from digitlab.io import python_settings, renamed_settings

    text = read_file(path, limit=MAX_CONFIG_BYTES)
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DataError(path, f"not a JSON run configuration ({exc})") from None
    known = {f.name for f in dataclasses.fields(RunConfig)}
    if not isinstance(fields, dict) or "model" not in fields:
        raise DataError(path, "not a digitlab run configuration (no \"model\")")
    unknown = sorted(set(fields) - known - {"model_settings"})
    if unknown:
        raise DataError(path, f"unknown run settings: {', '.join(unknown)}")
    full = fields.pop("model_settings", None) or {}
    if not isinstance(full, dict) or not isinstance(fields.get("settings", {}), dict):
        raise DataError(path, "model settings must be a JSON object")
    from digitlab.models import MODELS

    cls = MODELS.get(fields["model"])
    if cls is None:
        raise DataError(path, f"unknown model {fields['model']!r}: choose from {', '.join(MODELS)}")
    # Every setting the run used, defaults included, so that a later digitlab with other
    # defaults replays the same model; random_state follows --seed unless the run set it.
    chosen = renamed_settings(fields.get("settings", {}))
    settings = python_settings(cls, {**renamed_settings(full), **chosen})
    if "random_state" not in chosen:
        settings.pop("random_state", None)
    try:
        return RunConfig(**{**fields, "settings": settings})
    except TypeError as exc:
        raise DataError(path, f"unreadable run configuration ({exc})") from None


def preprocessing_of(config: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """How raw images become this model's input, stored in the model file."""
    from digitlab.preparation import dataset_preprocessing

    return dataset_preprocessing(dataset, resized_to=config.image_size, deskew=config.deskew,
                                 normalise=config.normalise)
