"""Label mappings for the tasks a model can be trained on.

``all``     every class, labels unchanged;
``is-D``    one digit against the rest: label 1 for D, 0 for every other digit;
``A-vs-B``  only digits A and B: label 0 for A, 1 for B (so ``0-vs-1`` keeps
            MNIST's own labels).

Binary tasks always end with labels 0/1, the form the classic perceptron and
logistic exercises expect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from digitlab.errors import SettingsError

_IS = re.compile(r"^is-(\d+)$")
_VS = re.compile(r"^(\d+)-vs-(\d+)$")


@dataclass(frozen=True)
class Task:
    """A parsed ``--task``: which original labels to keep and how to map them."""

    name: str
    kind: str  # "all", "is" or "vs"
    positive: int | None = None
    negative: int | None = None

    def class_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Names of the task's classes, given the names of the original labels."""
        if self.kind == "all":
            return names
        positive = _name(names, self.positive)
        if self.kind == "is":
            return (f"not {positive}", positive)
        return (_name(names, self.negative), positive)

    def apply(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the task's images and map their labels; shapes ``(n, h, w)``, ``(n,)``."""
        if self.kind == "all":
            return images, labels
        if self.kind == "is":
            return images, (labels == self.positive).astype(np.int64)
        keep = (labels == self.negative) | (labels == self.positive)
        return images[keep], (labels[keep] == self.positive).astype(np.int64)

    def check_labels(self, present: set[int]) -> str | None:
        """A problem with this task on data holding ``present`` labels, or None."""
        wanted = {d for d in (self.positive, self.negative) if d is not None}
        missing = sorted(wanted - present)
        if missing:
            return f"task {self.name!r} needs label {missing[0]}, which the data does not hold"
        return None


def _name(names: tuple[str, ...], label: int | None) -> str:
    assert label is not None
    return names[label] if 0 <= label < len(names) else str(label)


def parse_task(text: str) -> Task:
    """Parse ``all``, ``is-D`` or ``A-vs-B``; raise SettingsError on anything else."""
    text = text.strip().lower()
    if text in ("all", "multiclass", "multi-class"):
        return Task("all", "all")
    if match := _IS.match(text):
        return Task(text, "is", positive=int(match[1]))
    if match := _VS.match(text):
        negative, positive = int(match[1]), int(match[2])
        if negative == positive:
            raise SettingsError(f"task {text!r}: the two digits must differ")
        return Task(text, "vs", positive=positive, negative=negative)
    raise SettingsError(f"unknown task {text!r}: use 'all', 'is-D' (e.g. is-2) or 'A-vs-B' (e.g. 0-vs-1)")
