"""What each model setting may be, declared once as data and checked in one place.

Every model lists its ``__init__`` settings in ``settings_spec`` (scikit-learn's
``_parameter_constraints`` pattern; its module is private, so this is a small
one of our own), and ``DigitClassifier`` checks them all before fitting or
loading weights: a bad setting is refused before any state changes, in one
message of the same form for every model ("lr must be a number > 0, got -1").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from digitlab.errors import SettingsError


class Setting:
    """What one setting may be: ``allows`` says whether a value is one, ``describe`` in words."""

    def allows(self, value: object) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, name: str, value: object) -> None:
        """SettingsError naming the setting, what it must be and what it got, unless allowed."""
        if not self.allows(value):
            raise SettingsError(f"{name} must be {self.describe()}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Integer(Setting):
    """An integer of at least ``low`` (bools are not integers here), or None if ``none``."""

    low: int = 1
    none: bool = False

    def allows(self, value: object) -> bool:
        return (value is None and self.none) or (_is_int(value) and int(value) >= self.low)  # type: ignore[call-overload]

    def describe(self) -> str:
        return f"an integer >= {self.low}" + " or None" * self.none


@dataclass(frozen=True)
class Number(Setting):
    """A finite real number within ``low`` .. ``high`` (``closed`` says which ends belong)."""

    low: float = -math.inf
    high: float = math.inf
    closed: str = "both"  # "both", "left", "right" or "neither"
    none: bool = False

    def allows(self, value: object) -> bool:
        if value is None:
            return self.none
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False
        number = float(value)
        above = number >= self.low if self.closed in ("both", "left") else number > self.low
        below = number <= self.high if self.closed in ("both", "right") else number < self.high
        return math.isfinite(number) and above and below

    def describe(self) -> str:
        left_closed = self.closed in ("both", "left")
        right_closed = self.closed in ("both", "right")
        if self.high == math.inf:
            span = f"a number {'>=' if left_closed else '>'} {self.low:g}"
        elif self.low == -math.inf:
            span = f"a number {'<=' if right_closed else '<'} {self.high:g}"
        else:
            span = (f"a number in {'[' if left_closed else '('}{self.low:g}, "
                    f"{self.high:g}{']' if right_closed else ')'}")
        return span + " or None" * self.none


@dataclass(frozen=True)
class Flag(Setting):
    """True or False (NumPy's bool too), or None if ``none``."""

    none: bool = False

    def allows(self, value: object) -> bool:
        return isinstance(value, bool | np.bool_) or (value is None and self.none)

    def describe(self) -> str:
        return "True or False" + " or None" * self.none


@dataclass(frozen=True)
class OneOf(Setting):
    """One of a few named choices."""

    options: tuple[str, ...]

    def allows(self, value: object) -> bool:
        return isinstance(value, str) and value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(repr(option) for option in self.options)


@dataclass(frozen=True)
class Seed(Setting):
    """``random_state``: None (a fresh seed each fit), an integer >= 0, or, if
    ``generator``, a NumPy Generator (whose draws then continue from fit to fit)."""

    generator: bool = True

    def allows(self, value: object) -> bool:
        return (value is None or (_is_int(value) and int(value) >= 0)  # type: ignore[call-overload]
                or (self.generator and isinstance(value, np.random.Generator)))

    def describe(self) -> str:
        if self.generator:
            return "None, an integer >= 0 or a numpy Generator"
        return "None or an integer >= 0"


@dataclass(frozen=True)
class LayerSizes(Setting):
    """Sizes of hidden layers: a sequence of integers >= 1 (empty: no hidden layer), or one."""

    def allows(self, value: object) -> bool:
        if _is_int(value):
            return int(value) >= 1  # type: ignore[call-overload]
        return (isinstance(value, Sequence) and not isinstance(value, str)
                and all(_is_int(size) and int(size) >= 1 for size in value))

    def describe(self) -> str:
        return "a tuple of positive layer sizes"


@dataclass(frozen=True)
class ClassWeight(Setting):
    """scikit-learn's ``class_weight``: None, ``"balanced"`` or a dict of label -> weight > 0
    (the dict's labels are checked against the training labels at fit time)."""

    def allows(self, value: object) -> bool:
        if value is None or (isinstance(value, str) and value == "balanced"):
            return True
        return isinstance(value, Mapping) and all(
            _POSITIVE.allows(weight) for weight in value.values())

    def describe(self) -> str:
        return "None, 'balanced' or a dict of label -> weight"

    def check(self, name: str, value: object) -> None:
        if isinstance(value, Mapping):  # name the label whose weight is wrong
            for label, weight in value.items():
                if not _POSITIVE.allows(weight):
                    raise SettingsError(f"{name} of {label!r} must be a positive number, got {weight!r}")
        super().check(name, value)


_POSITIVE = Number(0.0, closed="neither")


def check_settings(spec: Mapping[str, Setting], settings: Mapping[str, object], owner: str) -> None:
    """SettingsError for the first of ``settings`` its ``spec`` does not allow.

    A setting missing from ``spec`` is a bug in the model (every setting is
    declared), said as such rather than passed unchecked.
    """
    for name, value in settings.items():
        if name not in spec:
            raise TypeError(f"{owner} does not declare what its setting {name!r} may be")
        spec[name].check(name, value)


# A model's ``settings_spec``: every ``__init__`` setting by name.
SettingsSpec = Mapping[str, Setting]
