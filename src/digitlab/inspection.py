"""Everything worth knowing about one fitted model on one dataset: its figures
on both splits, what it learned, and the figures that show it.

:func:`inspect_model` is what ``digitlab train``, ``evaluate`` and ``inspect``
share; it returns numbers (JSON-ready) and matplotlib Figures, and writes
nothing. :mod:`digitlab.report` turns the result into files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab import analysis, explain, metrics
from digitlab.calibration import (
    Calibration,
    Reliability,
    reliability,
    scale,
    summary,
    temperature_of,
)
from digitlab.data.dataset import Dataset
from digitlab.data_figures import data_figures
from digitlab.drawing import Recipe, plotting
from digitlab.errors import SettingsError
from digitlab.models import DigitClassifier

if TYPE_CHECKING:
    from matplotlib.figure import Figure

N_EXAMPLES = 20
N_WORST = 10
N_HIDDEN_SHOWN = 16
SIMILARITY_TARGET = 5  # "which digit is most often mistaken for a 5", the classic question
# Models whose reports explain their worst-written digits: those explain.py has a fast
# gradient method for (occlusion on any other model would cost seconds per report).
ATTRIBUTED_KINDS = tuple(explain.AUTO_METHOD)


def features_for(model: DigitClassifier, dataset: Dataset, split: str) -> np.ndarray:
    """``dataset.features(split)``, or for a model that does not read pixels
    (``reads_pixels`` False) zeros of the same shape and dtype as a read-only view of
    one row: the same predictions, without 4 bytes a pixel of memory and the time to
    fill them (about half a second for Fashion-MNIST's 60,000 images)."""
    if getattr(model, "reads_pixels", True):
        return dataset.features(split)
    h, w = dataset.image_shape
    return np.broadcast_to(np.zeros(h * w, dtype=np.float32), (len(dataset.labels(split)), h * w))


@dataclass
class Figures:
    """Named figures with a caption each, in the order the report shows them.

    A figure is kept as given: a Figure, or a :class:`~digitlab.drawing.Recipe` that
    builds it, which a report hands to a drawing process as it is (matplotlib is
    then never imported here). :attr:`items` builds every recipe, once.
    """

    entries: list[tuple[str, str, Figure | Recipe]] = field(default_factory=list)

    def add(self, name: str, caption: str, figure: Figure | Recipe) -> None:
        self.entries.append((name, caption, figure))

    @property
    def items(self) -> list[tuple[str, str, Figure]]:
        """Every figure as a matplotlib Figure (recipes built here, the first time)."""
        self.entries = [(name, caption, figure() if isinstance(figure, Recipe) else figure)
                        for name, caption, figure in self.entries]
        return list(self.entries)  # type: ignore[arg-type]  # every entry is built now

    def names(self) -> list[str]:
        return [name for name, _, _ in self.entries]

    def recipes(self) -> list[Recipe]:
        """The figures not yet built, in order: what a drawing process can draw."""
        return [figure for _, _, figure in self.entries if isinstance(figure, Recipe)]


@dataclass
class Inspection:
    evaluation: dict[str, Any]  # split -> metrics.evaluate_predictions(...)
    analysis: dict[str, Any]
    figures: Figures
    readings: list[str]  # plain-language sentences for the report
    calibration: Calibration | None = None  # the model's temperature, fitted on validation

    def __repr__(self) -> str:
        accuracy = ", ".join(f"{split} accuracy {figures['accuracy']:.2%}"
                             for split, figures in self.evaluation.items())
        return f"Inspection({accuracy}; {len(self.figures.items)} figures)"

    def _repr_html_(self) -> str:
        """Jupyter's view: accuracy per split, the readings, every figure inline (PNG)."""
        from digitlab import display

        return display.inspection_html(self)


def inspect_model(
    model: DigitClassifier,
    dataset: Dataset,
    *,
    history: dict[str, list[float]] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
    figures: bool = True,
    calibration: Calibration | None = None,
    target_digit: int | None = None,
    worst_digit: int | None = None,
    seed: int = 0,
    early_figures: dict[str, tuple[str, Recipe]] | None = None,
) -> Inspection:
    """Evaluate ``model`` on ``splits`` of ``dataset`` and analyse what it learned.

    The analysis and figures use the last of ``splits`` (the test split by default).
    Probabilities are scaled by the ``calibration``'s temperature, as served; each
    split's ``calibration`` entry gives the calibration error before and after it.

    ``target_digit``: the label whose "most mistaken for" ranking is made (default 5
    when the model knows it and has more than two classes). ``worst_digit``: show the
    worst-written images of that label only (default: the worst of every label).
    ``seed`` draws the example digits shown, at random per class. ``early_figures``:
    the data's own figures, made before (:func:`digitlab.data_figures.data_figures`, for
    the last of ``splits``) and perhaps already being drawn.
    """
    classes = np.asarray(model.classes_)
    check_analysis_digits(classes, target_digit=target_digit, worst_digit=worst_digit)
    names = list(dataset.class_names)
    evaluation: dict[str, Any] = {}
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    temperature = temperature_of(calibration)
    bins: list[tuple[str, Reliability]] = []
    for split in splits:
        X, y = features_for(model, dataset, split), dataset.labels(split)
        raw = model.predict_proba(X)
        proba = scale(raw, temperature)
        predicted = classes[np.argmax(proba, axis=1)]
        outputs[split] = (predicted, proba)
        evaluation[split] = metrics.evaluate_predictions(
            y, predicted, proba, classes, y_train=dataset.train_labels
        )
        positions = metrics.class_positions(classes, y)
        known = positions >= 0
        if known.any():
            evaluation[split]["calibration"] = summary(raw[known], positions[known], temperature)
            if split == splits[-1]:
                bins = [("uncalibrated", reliability(raw[known], positions[known]))]
                if calibration is not None:
                    bins.append((f"temperature {temperature:.2f}",
                                 reliability(proba[known], positions[known])))
    split = splits[-1]
    predicted, proba = outputs[split]
    images, y = dataset.images(split), dataset.labels(split)
    found: dict[str, Any] = {}
    readings: list[str] = []
    shown = Figures()
    shape = dataset.image_shape

    def name_of(label: int) -> str:
        return names[label] if 0 <= label < len(names) else str(label)

    # -- pixel importance: linear models, and first-layer weights of networks
    weights = model.linear_weights()
    if weights is not None:
        if weights.shape[0] <= 2:  # binary: the positive class's score, or its difference
            vector = weights[-1] - (weights[0] if weights.shape[0] == 2 else 0.0)
            ranking = analysis.pixel_ranking(vector, shape)
            found.update(ranking)
            positive = name_of(int(classes[-1]))
            readings.append(analysis.describe_pixel_ranking(ranking, positive))
            if figures:
                row_col = (ranking["most_positive_pixel"], ranking["most_negative_pixel"])
                shown.add("weights", f"Pixel weights towards “{positive}” (red raises the score, "
                          "blue lowers it)", Recipe("weight_image", (vector, shape), dict(
                              title=f"weights: {positive}",
                              marked={"most positive": tuple(row_col[0]),
                                      "most negative": tuple(row_col[1])})))
                # both classes, three each: the first six of a class-sorted split are one class
                picked = analysis.sample_per_class(y, 6, rng=seed)
                shown.add("pixel_arrows", "Most positive pixel (green) and most negative pixel "
                          "(red) on example digits of both classes", Recipe("pixel_arrows", (
                              images[picked], tuple(row_col[0]), tuple(row_col[1])),
                              dict(titles=[name_of(int(v)) for v in y[picked]])))
        else:
            found["per_class_pixels"] = {
                name_of(int(c)): analysis.pixel_ranking(w, shape, k=3)
                for c, w in zip(classes, weights, strict=True)
            }
            if figures:
                shown.add("weights", "Pixel weights of each class score",
                          Recipe("weight_images", (weights, shape, [name_of(int(c)) for c in classes]),
                                 dict(suptitle="Weights per class")))
    hidden = model.hidden_weights()
    if hidden is not None and figures:
        count = min(len(hidden), N_HIDDEN_SHOWN)
        shown.add("hidden_weights", f"First-layer weights of {count} hidden units: each unit's "
                  "weight on every pixel (red raises the unit, blue lowers it). Strokes and "
                  "blobs are the pen shapes a unit looks for; speckled noise is a unit that "
                  "learned little", plotting().mlp_first_layer(model, count=N_HIDDEN_SHOWN, shape=shape))
    if getattr(model, "kind", None) == "cnn" and figures:
        filters = plotting().cnn_filters(model)
        shown.add("cnn_filters", "The CNN's first-layer 3x3 filters, one per channel, on one "
                  "colour scale: a red row beside a blue one finds a horizontal edge, red beside "
                  "blue columns a vertical one, all red a blob of ink", filters)
        one_each = analysis.sample_per_class(y, len(np.unique(y)), rng=seed)
        shown.add("cnn_activations", f"What the first block (convolution, pooling, batch norm, "
                  f"ReLU) sees in one {split} digit per class, drawn at random (seed {seed}): "
                  "each channel lights up where its filter finds its pattern; a channel dark on "
                  "every digit is unused", plotting().cnn_activations(
                      model, images[one_each], [name_of(int(v)) for v in y[one_each]]))

    # -- mistakes: the most confused pairs, and what is mistaken for the target digit
    conf = evaluation[split]["confusion"]
    found["most_confused_pairs"] = analysis.most_confused_pairs(np.array(conf["matrix"]), conf["labels"])
    if len(classes) > 2 or target_digit is not None:
        if target_digit is not None:
            target = int(target_digit)
        else:
            target = SIMILARITY_TARGET if SIMILARITY_TARGET in classes else int(classes[-1])
        ranking_for = analysis.mistaken_for(y, predicted, target, classes)
        found["mistaken_for"] = {"target": target, "ranking": ranking_for}
        own = ranking_for[0]
        others = [entry for entry in ranking_for if entry["label"] != target]
        reading = (f"{own['percent']:.1f}% of the {split} images of {name_of(target)} "
                   f"({own['count']} of {own['total']}) were read as {name_of(target)}.")
        if others:
            top = others[0]
            reading += (f" The digit most often mistaken for {name_of(target)} is "
                        f"{name_of(top['label'])}: {top['percent']:.1f}% of them ({top['count']} "
                        f"of {top['total']}) were read as {name_of(target)}.")
        readings.append(reading)
        if figures:
            shown.add("similarity", f"Share of each true digit predicted as {name_of(target)}",
                      Recipe("similarity_bars", (ranking_for, name_of(target), names)))

    # -- worst-written digits: the lowest probability of their own label
    p_true = analysis.true_class_probability(proba, y, classes)
    if worst_digit is None:
        worst = analysis.top_losses(proba, y, classes, k=N_WORST)
        whose = f"{split} digits"
    else:
        worst = analysis.worst_written(proba, y, classes, int(worst_digit), k=N_WORST)
        whose = f"{split} images of {name_of(int(worst_digit))}"
        found["worst_digit"] = int(worst_digit)
    entries = [{"index": int(i), "label": int(y[i]), "predicted": int(predicted[i]),
                "p_true": float(p_true[i])} for i in worst]
    found["top_losses" if worst_digit is None else "worst_written"] = entries
    if figures and len(worst):
        shown.add("worst_written", f"The {len(worst)} {whose} least like their own label, with "
                  "the probability the model gave their true label",
                  Recipe("worst_written", (images[worst], p_true[worst],
                                           [name_of(int(v)) for v in y[worst]],
                                           [name_of(int(v)) for v in predicted[worst]]),
                         dict(suptitle=f"Worst-written {whose}: true,predicted and p(true)")))
    if figures and len(worst) and getattr(model, "kind", None) in ATTRIBUTED_KINDS:
        method = attribution_method(model)
        shown.add("attributions", f"Why the model read the worst-written {whose} as it did "
                  f"({method}; true,predicted): red pixels pushed it towards its answer, blue "
                  "ones against it. Red on a stray stroke or a missing gap shows what misled it",
                  plotting().attributions(model, images[worst],
                                          [f"{name_of(int(t))},{name_of(int(p))}" for t, p
                                           in zip(y[worst], predicted[worst], strict=True)],
                                          method=method, mistakes=y[worst] != predicted[worst],
                                          suptitle=f"Worst-written {whose}: why (true,predicted)"))
    if figures:
        # at random per class, seeded: the first images of a class-sorted source are one class
        picked = analysis.sample_per_class(y, N_EXAMPLES, rng=seed)
        shown.add("examples", f"{len(picked)} {split} digits drawn at random, evenly over the "
                  f"classes (seed {seed}): true,predicted (mistakes in red)",
                  Recipe("digit_grid", (images[picked], [f"{name_of(int(t))},{name_of(int(p))}" for t, p
                                                         in zip(y[picked], predicted[picked], strict=True)]),
                         dict(mistakes=y[picked] != predicted[picked], suptitle=f"{split}: true,predicted")))
        of_data = early_figures if early_figures is not None else data_figures(dataset, split)
        shown.add("average_digits", *of_data["average_digits"])
        shown.add("confusion", f"Confusion matrix on the {split} split",
                  Recipe("confusion_figure", (np.array(conf["matrix"]),
                                              [name_of(int(v)) for v in conf["labels"]])))
        shown.add("digit_values", *of_data["digit_values"])
        if bins:
            shown.add("reliability", f"Reliability on the {split} split: accuracy against "
                      "confidence in 15 bins (the dotted diagonal is a calibrated model)"
                      + (f"; the temperature was fitted on {calibration.n} validation images"
                         if calibration is not None else ""),
                      Recipe("reliability_diagram", ([(label, _plain(b)) for label, b in bins],),
                             dict(title=f"Reliability ({split})")))
        if history and history.get("loss"):
            shown.add("learning_curves", "Loss and accuracy per epoch (train and validation)",
                      Recipe("learning_curves", (history,)))
        if history and history.get("candidate"):
            tried = [int(c) for c in history["candidate"]]
            n_candidates = int(getattr(model, "n_candidates", 0)) or tried[-1] + 1
            train_baseline = metrics.majority_baseline(dataset.train_labels, dataset.train_labels)
            shown.add("candidates", "Best training accuracy against candidates tried",
                      Recipe("candidates_curve", (tried, history["best_accuracy"], n_candidates),
                             dict(baseline=train_baseline)))
    test_eval = evaluation[split]
    if "majority_baseline" in test_eval:
        gap = test_eval["accuracy"] - test_eval["majority_baseline"]
        readings.insert(0, (
            f"On the {split} split the model is right {test_eval['accuracy']:.1%} of the time "
            f"(95% interval {metrics.format_interval(test_eval['accuracy_ci'])} on "
            f"{test_eval['count']:,} images); "
            f"always answering the most frequent class would be right "
            f"{test_eval['majority_baseline']:.1%} of the time, a difference of {gap:+.1%}. "
            f"Balanced accuracy (the mean of per-class recalls; 50% for any constant answer "
            f"on two classes) is {test_eval['balanced_accuracy']:.1%}."
        ))
    if "calibration" in test_eval:
        readings.append(describe_calibration(split, test_eval["accuracy"], test_eval["calibration"],
                                             calibration))
    return Inspection(evaluation, found, shown, readings, calibration)


def _plain(bins: Reliability) -> SimpleNamespace:
    """``bins``' arrays and ECE as a plain namespace, all the figure reads: a recipe holding
    a Reliability would make the drawing process import digitlab.calibration (and with it
    SciPy's optimisers and scikit-learn's metrics, 0.6 s) just to unpickle it."""
    return SimpleNamespace(edges=bins.edges, count=bins.count, confidence=bins.confidence,
                           accuracy=bins.accuracy, ece=bins.ece)


def attribution_method(model: DigitClassifier) -> str:
    """:func:`digitlab.explain.method_for` the model, or occlusion for a CNN when Captum
    (the torch extra's attribution library) is not installed: a report never fails for it."""
    import importlib.util

    method = explain.method_for(model)
    if method in ("integrated-gradients", "saliency") and importlib.util.find_spec("captum") is None:
        return "occlusion"
    return method


def check_analysis_digits(
    classes: np.ndarray, *, target_digit: int | None = None, worst_digit: int | None = None
) -> None:
    """Refuse a ``target_digit`` or ``worst_digit`` that is not one of ``classes``
    (the labels of the task: 0 and 1 on "is it a 2")."""
    for option, label in (("--target-digit", target_digit), ("--worst-digit", worst_digit)):
        if label is not None and label not in np.asarray(classes):
            raise SettingsError(f"{option} {label} is not a class of this task (classes: "
                                f"{', '.join(str(int(c)) for c in classes)})")


def describe_calibration(
    split: str, accuracy: float, figures: dict[str, float], calibration: Calibration | None
) -> str:
    """One sentence on how far the model's confidence is from its accuracy."""
    text = (f"On the {split} split the model's mean confidence is "
            f"{figures['mean_confidence_after']:.1%} at {accuracy:.1%} accuracy; its expected "
            f"calibration error is {figures['ece_after']:.3f}")
    if calibration is None:
        return text + " (no temperature was fitted: train with a validation split)."
    return (text + f", {figures['ece_before']:.3f} before the temperature "
            f"{calibration.temperature:.2f} fitted on {calibration.n} validation images "
            f"(mean confidence {figures['mean_confidence_before']:.1%} before).")
