"""The models, by the name ``digitlab train --model NAME`` uses.

The CNN is listed when PyTorch is installed (the ``torch`` extra); its module
imports torch lazily, so listing it costs nothing until a CNN is used.
"""

from __future__ import annotations

import importlib.util

from digitlab.models.base import DigitClassifier, features_outside_unit_range
from digitlab.models.baseline import Majority, RandomScores
from digitlab.models.guess_and_check import GuessAndCheck
from digitlab.models.mlp import MLP
from digitlab.models.perceptron import Perceptron
from digitlab.models.softmax import Softmax
from digitlab.models.template import Template

MODELS: dict[str, type[DigitClassifier]] = {
    cls.kind: cls for cls in (Majority, MLP, RandomScores, Softmax, Template, GuessAndCheck, Perceptron)
}
if importlib.util.find_spec("torch") is not None:
    from digitlab.models.cnn import CNN

    MODELS[CNN.kind] = CNN


def readable_models() -> dict[str, type[DigitClassifier]]:
    """The model kinds a model file may hold: :data:`MODELS`, and the CNN even without
    PyTorch (its file loads and predicts with the NumPy forward pass, ``cnn_numpy``)."""
    from digitlab.models.cnn import CNN  # imports without torch

    return {**MODELS, CNN.kind: CNN}

__all__ = [
    "MLP",
    "MODELS",
    "DigitClassifier",
    "GuessAndCheck",
    "Majority",
    "Perceptron",
    "RandomScores",
    "Softmax",
    "Template",
    "features_outside_unit_range",
]

if "cnn" in MODELS:
    __all__ += ["CNN"]

def __getattr__(name: str) -> object:
    # Without PyTorch, say what ``CNN`` needs instead of "no attribute".
    if name == "CNN":
        raise ImportError("digitlab's CNN needs PyTorch: pip install 'digitlab[torch]'")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
