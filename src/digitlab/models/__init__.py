"""The models, by the name ``digitlab train --model NAME`` uses."""

from __future__ import annotations

from digitlab.models.base import DigitClassifier
from digitlab.models.baseline import Majority, RandomScores
from digitlab.models.template import Template

MODELS: dict[str, type[DigitClassifier]] = {
    cls.kind: cls for cls in (Majority, RandomScores, Template)
}

__all__ = ["MODELS", "DigitClassifier", "Majority", "RandomScores", "Template"]
