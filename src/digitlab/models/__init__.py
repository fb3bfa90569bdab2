"""The models, by the name ``digitlab train --model NAME`` uses."""

from __future__ import annotations

from digitlab.models.base import DigitClassifier
from digitlab.models.baseline import Majority, RandomScores
from digitlab.models.mlp import MLP
from digitlab.models.perceptron import GuessAndCheck, Perceptron
from digitlab.models.softmax import Softmax
from digitlab.models.template import Template

MODELS: dict[str, type[DigitClassifier]] = {
    cls.kind: cls for cls in (Majority, MLP, RandomScores, Softmax, Template, GuessAndCheck, Perceptron)
}

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
]
