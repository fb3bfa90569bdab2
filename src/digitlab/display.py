"""Notebook helpers: random digits per class, a prediction grid, and the HTML that
a Dataset, a model summary and an inspection show inline in Jupyter.

Each ``show_*`` function returns a matplotlib Figure (drawn by
:mod:`digitlab.plots`) and shows nothing itself: Jupyter displays a returned
Figure, and a script saves it with :func:`digitlab.plots.save_png`.
Samples are drawn at random with a seed, never the first images: class-sorted
sources (a folder per digit) would show one class only.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab import analysis
from digitlab.drawing import plotting

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from digitlab.data.dataset import Dataset
    from digitlab.inspection import Inspection
    from digitlab.models.base import DigitClassifier

SAMPLE_PER_CLASS = 4  # digits per class in a Dataset's inline view


# ---------------------------------------------------------------- figures


def show_digits(
    dataset: Dataset,
    *,
    per_class: int = 5,
    split: str = "train",
    seed: int | None = 0,
) -> Figure:
    """``per_class`` random digits of each class of ``split``, a row per class.

    Each digit is captioned with its class name; drawn with ``seed`` (the same
    seed, the same digits). A class with fewer images shows all of them, so a
    row may then hold the start of the next class.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    labels = dataset.labels(split)
    if len(labels) == 0:
        raise ValueError(f"the {split} split of {dataset.name} is empty")
    chosen = analysis.sample_per_class(labels, per_class * len(np.unique(labels)), rng=seed)
    fig = plotting().digit_grid(dataset.images(split)[chosen],
                                [dataset.class_name(int(label)) for label in labels[chosen]],
                                ncols=per_class,  # a row per class (a short row for a rare class)
                                suptitle=f"{dataset.name}, {split}: {per_class} random digits "
                                         "per class")
    return fig


def show_predictions(
    model: DigitClassifier,
    dataset: Dataset,
    *,
    split: str = "test",
    n: int = 30,
    seed: int | None = 0,
    mistakes_only: bool = False,
    ncols: int = 10,
) -> Figure:
    """``n`` random digits of ``split`` captioned "label,prediction", mistakes in red.

    With ``mistakes_only`` the digits are drawn from the mistakes alone (all of
    them when there are fewer than ``n``).
    """
    images, labels = dataset.images(split), dataset.labels(split)
    predicted = model.predict(dataset.features(split))
    pool = np.flatnonzero(predicted != labels) if mistakes_only else np.arange(len(labels))
    if len(pool) == 0:
        raise ValueError(f"no {'mistakes' if mistakes_only else 'images'} in the {split} split to show")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
    wrong = predicted[chosen] != labels[chosen]
    accuracy = float(np.mean(predicted == labels))
    fig = plotting().digit_grid(
        images[chosen],
        [f"{dataset.class_name(int(t))},{dataset.class_name(int(p))}"
         for t, p in zip(labels[chosen], predicted[chosen], strict=True)],
        mistakes=wrong, ncols=ncols,
        suptitle=(f"{split}: label,prediction ({int(wrong.sum())} of {len(chosen)} shown wrong, "
                  f"in red; accuracy {accuracy:.1%} on all {len(labels)})"),
    )
    return fig


# ---------------------------------------------------------------- HTML pieces


def html_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(fig: Figure, alt: str) -> str:
    """``fig`` as an ``<img>`` holding its PNG inline (base64): the notebook needs no file."""
    encoded = base64.b64encode(plotting().png_bytes(fig)).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def dataset_html(dataset: Dataset) -> str:
    """What ``Dataset._repr_html_`` shows: shape, counts per class and split, a sample grid."""
    h, w = dataset.image_shape
    splits = dataset.splits
    counts = {split: dataset.counts(split) for split in splits}
    labels = sorted({label for split in splits for label in counts[split]})
    rows: list[list[Any]] = [[dataset.class_name(label), *(counts[s].get(label, 0) for s in splits)]
                             for label in labels]
    rows.append(["all", *(len(dataset.labels(s)) for s in splits)])
    parts = [f"<p><b>Dataset {html.escape(dataset.name)}</b>: {h}x{w} uint8 images, task "
             f"<b>{html.escape(dataset.task)}</b>, {dataset.n_classes} classes.</p>",
             html_table(["class", *splits], rows)]
    parts += [f"<p><i>{html.escape(note)}</i></p>" for note in dataset.notes]
    sample_split = "train" if len(dataset.train_labels) else "test"
    if len(dataset.labels(sample_split)):
        fig = show_digits(dataset, per_class=SAMPLE_PER_CLASS, split=sample_split, seed=0)
        parts.append(figure_html(fig, f"{SAMPLE_PER_CLASS} random {sample_split} digits per class"))
    return "<div>" + "\n".join(parts) + "</div>"


def inspection_html(inspection: Inspection) -> str:
    """What ``Inspection._repr_html_`` shows: the figures per split, readings, figures."""
    rows = []
    for split, figures in inspection.evaluation.items():
        baseline = figures.get("majority_baseline")
        rows.append([split, figures["count"], f"{figures['accuracy']:.2%}",
                     f"{figures['balanced_accuracy']:.2%}",
                     "" if baseline is None else f"{baseline:.2%}"])
    parts = [html_table(["split", "images", "accuracy", "balanced accuracy", "majority baseline"],
                        rows)]
    parts += [f"<p>{html.escape(text)}</p>" for text in inspection.readings]
    for _name, caption, figure in inspection.figures.items:
        parts.append(f"<figure>{figure_html(figure, caption)}"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "<div>" + "\n".join(parts) + "</div>"
