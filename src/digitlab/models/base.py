"""The estimator contract every digitlab model follows.

scikit-learn shaped: settings are keyword-only and stored unchanged in
``__init__``; ``fit(X, y)`` returns ``self``; learned state ends in ``_``;
``predict``, ``predict_proba`` (rows sum to 1), ``decision_function`` and
``score`` (accuracy, from ClassifierMixin). Because of this, ``clone``,
``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` work unchanged.

Learned parameters are a flat ``dict[str, ndarray]`` (``state_dict`` /
``load_state_dict``), which is what model files store. Each model declares
what that dict must hold for its settings (``_state_spec``), and
``load_state_dict`` refuses anything else before it sets a single attribute.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import special
from scipy.optimize import minimize_scalar
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from digitlab.errors import DataWarning, SettingsError
from digitlab.models.settings import ClassWeight, Setting, check_settings
from digitlab.models.summary import ModelSummary

# Floating arrays may be either: models fit in float32, MLP.from_sklearn keeps float64.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ArraySpec:
    """What one array of a state dict must be.

    ``dtype`` "float" is float32 or float64, every value finite; "int" is any
    integer dtype; "any" is any at all (labels: a model may be fitted on
    strings). ``values`` bounds numbers a model divides by (a temperature) or
    seeds with.
    """

    shape: tuple[int, ...]
    dtype: Literal["float", "int", "any"] = "float"
    values: Literal["any", "positive", "non-negative"] = "any"


class DigitClassifier(ClassifierMixin, BaseEstimator):
    """Base class: input checks, label encoding, predict from scores, state dicts.

    Subclasses implement ``_fit(X, y_index)`` (``y_index`` are positions in
    ``classes_``) and ``_scores(X)`` returning ``(n_samples, n_classes)``
    scores whose argmax is the prediction, and list their learned arrays in
    ``_state_names``.
    """

    kind: ClassVar[str] = "base"
    binary_only: ClassVar[bool] = False  # True for models of two classes only (guess-and-check)
    min_classes: ClassVar[int] = 1  # fewest classes a fitted model can hold
    # Share of the train images a training run holds out as validation for what it
    # chooses (the kept epoch, early stopping, calibration); 0 for models that choose nothing.
    default_validation: ClassVar[float] = 0.1
    # False for a model whose fit and predictions depend on X's number of rows only (the
    # majority baseline): a run then gives it zeros of X's shape that take no memory
    # (inspection.features_for), not a float32 copy of every image.
    reads_pixels: ClassVar[bool] = True
    # What each ``__init__`` setting may be (models/settings.py), checked before any fit.
    settings_spec: ClassVar[Mapping[str, Setting]] = {}
    _state_names: ClassVar[tuple[str, ...]] = ()
    # Of those, the ones kept in the file that are not learned parameters (a seed, a
    # record of the search): listed by ``summary`` apart, not counted as parameters.
    _stored_names: ClassVar[tuple[str, ...]] = ()
    # What each learned array is, for ``summary``'s table ("class prior", "temperature").
    _array_roles: ClassVar[Mapping[str, str]] = {"temperature_": "calibration temperature"}

    # ------------------------------------------------------------ fit / predict

    def fit(self, X: np.ndarray, y: np.ndarray) -> DigitClassifier:
        """Fit to features ``X`` of shape (n_samples, n_features) and labels ``y`` (n_samples,)."""
        return self._checked_fit(X, y)

    def _checked_fit(self, X: np.ndarray, y: np.ndarray, **fit_options: Any) -> DigitClassifier:
        """Check the settings, ``X`` and ``y``, encode the labels, then ``_fit(X, y_index,
        **fit_options)``; nothing changes before every check has passed.

        Subclasses whose ``fit`` takes options (``callback``, ``eval_set``) name
        them in their own ``fit`` and pass them through here; an ``eval_set``
        reaches ``_fit`` checked, its labels as positions in ``classes_``.
        """
        self._check_settings()  # first: a bad setting leaves a fitted model as it was
        X, y = check_labels(X, y, self)
        classes, y_index = np.unique(y, return_inverse=True)
        # Labels it cannot take are refused first: no warning about X, no light_background_ set.
        check_class_count(self, classes)
        if "class_weight" in self.get_params(deep=False):
            # a dict's labels are checked against y's before any state changes
            class_weights(self.class_weight, classes, y_index)
        if fit_options.get("eval_set") is not None:
            fit_options["eval_set"] = self._encode_eval_set(fit_options["eval_set"], classes,
                                                            X.shape[1])
        X = self._check_features(X, fitting=True)  # the last check: it sets light_background_
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self._fit(X, y_index.astype(np.int64), **fit_options)
        return self

    def _encode_eval_set(
        self, eval_set: tuple[np.ndarray, np.ndarray], classes: np.ndarray, n_features: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``eval_set`` checked as ``X`` is, and its labels' positions in ``classes``: done
        before fitting changes anything, so a bad eval_set leaves a fitted model as it was."""
        X_val = check_array(eval_set[0], dtype=np.float32, estimator=self)
        if X_val.shape[1] != n_features:
            raise ValueError(f"eval_set has {X_val.shape[1]} features, X has {n_features}")
        return X_val, label_positions(classes, eval_set[1], len(X_val), what="eval_set labels")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores as scikit-learn gives them: shape (n_samples, n_classes), the largest
        wins; for two classes one score per sample, shape (n_samples,), positive for
        ``classes_[1]`` (so ROC AUC and other ranking metrics work as they do for
        LogisticRegression)."""
        scores = self._class_scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        scores = self._class_scores(X)  # checks the fitted state first
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes); rows sum to 1."""
        return softmax(self._class_scores(X))

    def _class_scores(self, X: np.ndarray) -> np.ndarray:
        """One score per class, shape (n_samples, n_classes), after checking the fitted
        state and ``X``: what every prediction is made of."""
        check_is_fitted(self, "classes_")
        return self._scores(self._check_features(X))

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """Learned arrays by name (including ``classes_``), copies."""
        check_is_fitted(self, "classes_")
        state = {name: np.array(getattr(self, name), copy=True) for name in self._state_names}
        state["classes_"] = np.array(self.classes_, copy=True)
        state["n_features_in_"] = np.array(self.n_features_in_, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> DigitClassifier:
        """Set learned arrays from :meth:`state_dict` output; returns self.

        ValueError (SettingsError for a setting) when ``state`` is not what
        this model with these settings holds; see :meth:`check_state`.
        """
        self.check_state(state)
        for name in self._state_names:
            setattr(self, name, np.array(state[name], copy=True))
        self.classes_ = np.array(state["classes_"], copy=True)
        self.n_features_in_ = int(state["n_features_in_"])
        return self

    def check_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Raise ValueError unless ``state`` could be :meth:`state_dict` of this model, fitted.

        The settings are checked first (SettingsError), then ``classes_``
        (distinct, increasing) and ``n_features_in_``, which give the
        shapes every other array must have for these settings
        (``_state_spec``): the same names, those shapes, float arrays finite.
        Nothing is set, so a refused state leaves the model as it was.
        """
        self._check_settings()
        classes = _checked_array(state, "classes_", ArraySpec((-1,), "any"))
        if not np.all(classes[1:] > classes[:-1]):  # predict and label_positions rely on it
            raise ValueError(f"classes_ {classes.tolist()} are not distinct and increasing")
        n_classes = len(classes)
        if n_classes < self.min_classes or (self.binary_only and n_classes != 2):
            need = "exactly 2" if self.binary_only else f"at least {self.min_classes}"
            raise ValueError(f"a {self.kind!r} model holds {need} classes, the state has {n_classes}")
        n_features = int(_checked_array(state, "n_features_in_", ArraySpec((), "int")))
        if n_features < 1:
            raise ValueError(f"n_features_in_ is {n_features}, expected at least 1")
        spec = self._state_spec(n_features, n_classes)
        missing = sorted(set(spec) - set(state))
        unknown = sorted(set(state) - set(spec) - {"classes_", "n_features_in_"})
        problems = [f"state is missing {missing}"] if missing else []
        if unknown:
            problems.append(f"state holds arrays a {self.kind!r} model does not have: {unknown}")
        problems += [_shape_problem(name, np.shape(state[name]), expected.shape)
                     for name, expected in spec.items() if name in state]
        problem = next((text for text in problems if text), None)
        if problem:  # names and shapes follow from the settings: say how
            note = self._state_note(n_features, n_classes)
            raise ValueError(f"{problem} ({note})" if note else problem)
        for name, expected in spec.items():
            _checked_array(state, name, expected)

    def summary(self) -> ModelSummary:
        """Kind, settings, and a row per layer (or learned array): a dict that prints as a table.

        ``n_parameters`` counts learned parameters only; arrays the model file
        keeps besides (``_stored_names``: a seed, which candidate won) are under
        ``stored`` with their values. See :mod:`digitlab.models.summary`.
        """
        check_is_fitted(self, "classes_")
        arrays = {name: np.asarray(getattr(self, name)) for name in self._state_names}
        learned = {name: a for name, a in arrays.items() if name not in self._stored_names}
        layers: list[dict[str, Any]] = []
        if "coef_" in learned and "intercept_" in learned:  # one linear layer: w·x + b per score
            coef, intercept = learned.pop("coef_"), learned.pop("intercept_")
            n_scores = max(intercept.size, 1)  # a bias per score (one for a binary sign)
            layers.append({
                "name": "linear", "type": f"Linear {self.n_features_in_} -> {n_scores}",
                "output_shape": [n_scores], "weight_shape": list(coef.shape),
                "bias_shape": list(intercept.shape), "n_parameters": int(coef.size + intercept.size),
            })
        layers += [{"name": name, "type": self._array_roles.get(name, "array"),
                    "output_shape": list(a.shape), "n_parameters": int(a.size)}
                   for name, a in learned.items()]
        return ModelSummary({
            "kind": self.kind,
            "settings": self.get_params(),
            "classes": self.classes_.tolist(),
            "layers": layers,
            "parameters": {name: list(arrays[name].shape) for name in self._state_names
                           if name not in self._stored_names},
            "n_parameters": int(sum(layer["n_parameters"] for layer in layers)),
            "stored": {name: arrays[name].tolist() for name in self._stored_names},
        })

    # ------------------------------------------------------------ what it learned

    def linear_weights(self) -> np.ndarray | None:
        """Pixel weights of a model whose scores are linear in the pixels, else None.

        Shape (1, n_features) for a binary model scoring only the positive
        class, or (n_classes, n_features): one row per class score.
        """
        return None

    def hidden_weights(self) -> np.ndarray | None:
        """First-layer weights of a network, (n_hidden, n_features), else None."""
        return None

    # ------------------------------------------------------------ for subclasses

    def _fit(self, X: np.ndarray, y_index: np.ndarray) -> None:
        raise NotImplementedError

    def _check_settings(self) -> None:
        """Raise SettingsError for a setting ``settings_spec`` does not allow, then for
        settings that do not go together (:meth:`_check_combination`)."""
        check_settings(self.settings_spec, self.get_params(deep=False), type(self).__name__)
        self._check_combination()

    def _check_combination(self) -> None:
        """Raise SettingsError for settings each allowed but not together (none by default)."""

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        """The learned arrays besides ``classes_`` and ``n_features_in_``, by name, for
        these (checked) settings, ``n_features`` inputs and ``n_classes`` classes."""
        raise NotImplementedError

    def _state_note(self, n_features: int, n_classes: int) -> str:
        """Which settings gave the shapes of ``_state_spec``, for error messages ("" if none)."""
        return ""

    def _scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_features(self, X: np.ndarray, *, fitting: bool = False) -> np.ndarray:
        # scikit-learn's own checks, in its words (its estimator checks look for them):
        # dense, real, 2-D, finite, at least one sample and one feature; float32 out.
        with _one_row_checked(X):
            X = check_array(X, dtype=np.float32, estimator=self)
        if not fitting and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        # A model fitted on a light background (warned about then) is not warned about it again.
        light = check_pixel_features(X, trained_light=not fitting and bool(
            getattr(self, "light_background_", False)))
        if fitting:
            self.light_background_ = light
        return X


# Off only inside :func:`features_outside_unit_range`.
_UNIT_RANGE_CHECKED = contextvars.ContextVar("digitlab_unit_range_checked", default=True)
# Rows looked at for the polarity check: the median of a few hundred images is the
# background's value as surely as that of sixty thousand, at a fraction of the cost.
_POLARITY_ROWS = 256
# Digit pictures are mostly background, so the median pixel is the background's value:
# at most 0.07 on MNIST, scikit-learn's digits and Fashion-MNIST as they are, at least
# 0.93 on each of them inverted. Features without a background (uniform noise, as in
# tests and scikit-learn's estimator checks) have a median near 0.5, hence 0.75, not 0.5.
_LIGHT_BACKGROUND = 0.75


def check_class_count(model: DigitClassifier, classes: np.ndarray) -> None:
    """Refuse, before anything is fitted, labels of fewer classes than ``model`` can hold
    (scikit-learn's words: "1 class"), or other than two for a two-class-only model."""
    n = len(classes)
    if n < model.min_classes:
        raise ValueError(f"y holds {n} class ({classes.tolist()}); a {model.kind!r} model needs "
                         f"{_number_word(model.min_classes)} classes or more")
    if model.binary_only and n != 2:  # a setting of the run (--task), so a SettingsError
        # The middle sentences are scikit-learn's, word for word: its estimator checks match them.
        target = "multiclass" if n > 2 else "unary"
        raise SettingsError(f"{model.kind!r} is a two-class model and y holds {n} classes. Only "
                            f"binary classification is supported. The type of the target is "
                            f"{target}. Pick a two-class task (e.g. --task is-2)")


def _number_word(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))


def check_labels(X: Any, y: Any, estimator: BaseEstimator) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` checked as scikit-learn checks a classifier's: y given, 1-D (a
    column is flattened with a warning), finite, as many as X's rows, and class labels
    -- not continuous values, which would each become a class of their own."""
    with _one_row_checked(X):
        X, y = check_X_y(X, y, dtype=np.float32, estimator=estimator)
    check_classification_targets(y)
    return X, y


def _one_row_checked(X: Any) -> contextlib.AbstractContextManager[Any]:
    """scikit-learn's checks with the finite check done on one row when every row of
    ``X`` is that row (a read-only broadcast view: the features of a model that reads
    no pixels, ``inspection.features_for``): scanning 60,000 repeats of it cost 20 ms
    a check. Any other ``X``, or a row that is not finite, gets the full check."""
    if isinstance(X, np.ndarray) and X.ndim == 2 and len(X) and X.strides[0] == 0:
        return config_context(assume_finite=bool(np.isfinite(X[0]).all()))
    return contextlib.nullcontext()


def check_pixel_features(X: np.ndarray, *, trained_light: bool = False) -> bool:
    """Warn of features outside [0, 1], and of a background that looks light (unless the
    model was ``trained_light``, on such features already); return whether it does.

    Models take pixel / 255, light ink on dark (MNIST's form). Pixels in 0..255
    would score as if every stroke were 255 times darker, and dark ink on light
    paper as if background and digit were swapped: neither fails by itself, so
    both are said here. Said, not refused: a scikit-learn estimator takes any
    real features (its estimator checks feed blobs and scaled data), and
    features that are not pixels are the user's to give. ``X`` is float, 2-D
    and finite (checked before).
    """
    if not _UNIT_RANGE_CHECKED.get():
        return False
    low, high = float(X.min()), float(X.max())
    if high > 1.0 or low < 0.0:
        found = f"max {high:g} - divide uint8 images by 255" if high > 1.0 else f"min {low:g}"
        warnings.warn(f"features should lie in [0, 1] (pixel / 255); got {found}",
                      DataWarning, stacklevel=4)
        return False
    rows = X[:: max(1, len(X) // _POLARITY_ROWS)]
    background = float(np.median(rows))
    light = background > _LIGHT_BACKGROUND
    if light and not trained_light:
        warnings.warn(f"features have a light background (median {background:.2f}): looks like "
                      "dark ink on light paper; digitlab models take light ink on dark: use 1 - X "
                      "or read_digits, which normalises", DataWarning, stacklevel=4)
    return light


@contextlib.contextmanager
def features_outside_unit_range() -> Iterator[None]:
    """Let models take features outside [0, 1] within this block (this thread or task only).

    For replaying an exercise that scales pixels otherwise (the lab's 8x8
    digits divided by 15 reach 16/15), not for everyday use.
    """
    token = _UNIT_RANGE_CHECKED.set(False)
    try:
        yield
    finally:
        _UNIT_RANGE_CHECKED.reset(token)


def _checked_array(state: Mapping[str, np.ndarray], name: str, spec: ArraySpec) -> np.ndarray:
    """``state[name]`` as an array, once it has the shape (-1: any length), dtype and values
    of ``spec``; ValueError naming the array otherwise."""
    if name not in state:
        raise ValueError(f"state is missing [{name!r}]")
    array = np.asarray(state[name])
    problem = _shape_problem(name, array.shape, spec.shape)
    if problem:
        raise ValueError(problem)
    if spec.dtype == "float" and array.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {array.dtype}, expected float32 or float64")
    if spec.dtype == "int" and array.dtype.kind not in "iu":
        raise ValueError(f"{name} has dtype {array.dtype}, expected integers")
    if spec.dtype == "float" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    if spec.values == "positive" and not np.all(array > 0):
        raise ValueError(f"{name} holds values <= 0, expected positive ones")
    if spec.values == "non-negative" and not np.all(array >= 0):
        raise ValueError(f"{name} holds negative values")
    return array


def _shape_problem(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """Why array ``name`` of ``shape`` is not of the ``expected`` one (-1: any length), or ""."""
    if len(shape) == len(expected) and all(
        want in (-1, got) for want, got in zip(expected, shape, strict=True)
    ):
        return ""
    want = ", ".join("n" if size == -1 else str(size) for size in expected)
    return f"{name} has shape {tuple(shape)}, expected ({want}{',' * (len(expected) == 1)})"


def label_positions(classes: np.ndarray, y: np.ndarray, n: int, *, what: str = "y") -> np.ndarray:
    """Positions of labels ``y`` (n,) in the sorted ``classes``; every label must be one of them."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{what} have shape {y.shape}, expected ({n},)")
    index = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
    unknown = classes[index] != y
    if np.any(unknown):
        raise ValueError(f"{what} not seen in training: {np.unique(y[unknown]).tolist()}")
    return index.astype(np.int64)


def class_weights(class_weight: object, classes: np.ndarray, y_index: np.ndarray) -> np.ndarray | None:
    """The weight of each class, shape (n_classes,), or None when every weight is 1.

    ``"balanced"`` is ``n_samples / (n_classes * count)`` (scikit-learn's
    ``compute_class_weight`` does the arithmetic); classes a dict leaves out
    weigh 1. None for all-ones weights (as ``"balanced"`` gives on equal
    counts), so the models then run their unweighted computation, bit for bit.
    """
    ClassWeight().check("class_weight", class_weight)
    if class_weight is None:
        return None
    if isinstance(class_weight, Mapping):
        known = set(classes.tolist())
        unknown = [label for label in class_weight if label not in known]
        if unknown:
            raise SettingsError(f"class_weight names labels the training data does not hold: "
                                f"{unknown} (its labels: {classes.tolist()})")
        weights = np.array([float(class_weight.get(label, 1.0)) for label in classes.tolist()])
    else:
        weights = compute_class_weight("balanced", classes=np.arange(len(classes)), y=y_index)
    return None if np.all(weights == 1.0) else weights


def linear_scores(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``X @ coef.T + intercept`` in float64, shape (n_samples, K), a block of rows at a time.

    Float64 so that an image's scores do not depend on the batch it comes in
    (float32 BLAS sums a row differently as the number of rows changes, by
    1e-7: scikit-learn's subset-invariance check); blocks bound the copies.
    """
    coef = np.asarray(coef, dtype=np.float64)
    out = np.empty((len(X), coef.shape[0]))
    for start in range(0, len(X), 4096):
        block = X[start : start + 4096].astype(np.float64)
        np.matmul(block, coef.T, out=out[start : start + 4096])
    out += intercept
    return out


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (n, k): ``scipy.special.softmax`` along the rows."""
    return special.softmax(scores, axis=1)


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature T minimising the cross-entropy of softmax(scores / T).

    Scores of margin-based models (templates, perceptrons) have no scale of
    their own; one fitted number makes their softmax probabilities honest
    enough to rank doubtful digits, without changing any prediction.
    """
    with np.errstate(over="ignore"):
        spread = float(np.std(scores)) or 1.0
    if not (np.all(np.isfinite(scores)) and np.isfinite(spread)):
        raise SettingsError("training diverged: the scores overflow; use a smaller learning rate")
    rows = np.arange(len(y_index))

    def nll(log_t: float) -> float:
        return float(-np.mean(special.log_softmax(scores / np.exp(log_t), axis=1)[rows, y_index]))

    result = minimize_scalar(nll, bounds=(np.log(spread) - 12, np.log(spread) + 6), method="bounded")
    return float(np.exp(result.x))
