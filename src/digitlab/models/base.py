"""The estimator contract every digitlab model follows.

scikit-learn shaped: settings are keyword-only and stored unchanged in
``__init__``; ``fit(X, y)`` returns ``self``; learned state ends in ``_``;
``predict``, ``predict_proba`` (rows sum to 1), ``decision_function`` and
``score`` (accuracy, from ClassifierMixin). Because of this, ``clone``,
``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` work unchanged.

Learned parameters are a flat ``dict[str, ndarray]`` (``state_dict`` /
``load_state_dict``), which is what model files store.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted


class DigitClassifier(ClassifierMixin, BaseEstimator):
    """Base class: input checks, label encoding, predict from scores, state dicts.

    Subclasses implement ``_fit(X, y_index)`` (``y_index`` are positions in
    ``classes_``) and ``_scores(X)`` returning ``(n_samples, n_classes)``
    scores whose argmax is the prediction, and list their learned arrays in
    ``_state_names``.
    """

    kind: ClassVar[str] = "base"
    binary_only: ClassVar[bool] = False  # True for models of two classes only (guess-and-check)
    _state_names: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------ fit / predict

    def fit(self, X: np.ndarray, y: np.ndarray) -> DigitClassifier:
        """Fit to features ``X`` of shape (n_samples, n_features) and labels ``y`` (n_samples,)."""
        return self._checked_fit(X, y)

    def _checked_fit(self, X: np.ndarray, y: np.ndarray, **fit_options: Any) -> DigitClassifier:
        """Check ``X`` and ``y``, encode the labels, then ``_fit(X, y_index, **fit_options)``.

        Subclasses whose ``fit`` takes options (``callback``, ``eval_set``) name
        them in their own ``fit`` and pass them through here.
        """
        X = self._check_features(X, fitting=True)
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"y has shape {y.shape}, expected ({len(X)},)")
        self.classes_, y_index = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        self._fit(X, y_index.astype(np.int64), **fit_options)
        return self

    def _encode_eval_set(
        self, eval_set: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Checked features of ``eval_set`` and its labels' positions in ``classes_``."""
        X_val = self._check_features(eval_set[0])
        return X_val, label_positions(self.classes_, eval_set[1], len(X_val), what="eval_set labels")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores of shape (n_samples, n_classes); the largest wins."""
        check_is_fitted(self, "classes_")
        return self._scores(self._check_features(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        scores = self.decision_function(X)  # checks the fitted state first
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes); rows sum to 1."""
        return softmax(self.decision_function(X))

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """Learned arrays by name (including ``classes_``), copies."""
        check_is_fitted(self, "classes_")
        state = {name: np.array(getattr(self, name), copy=True) for name in self._state_names}
        state["classes_"] = np.array(self.classes_, copy=True)
        state["n_features_in_"] = np.array(self.n_features_in_, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> DigitClassifier:
        """Set learned arrays from :meth:`state_dict` output; returns self."""
        names = ("classes_", "n_features_in_", *self._state_names)
        missing = [name for name in names if name not in state]
        if missing:
            raise ValueError(f"state is missing {missing}")
        for name in self._state_names:
            setattr(self, name, np.array(state[name], copy=True))
        self.classes_ = np.array(state["classes_"], copy=True)
        self.n_features_in_ = int(state["n_features_in_"])
        return self

    def summary(self) -> dict[str, object]:
        """Kind, settings and the shape and size of each learned array."""
        check_is_fitted(self, "classes_")
        arrays = {name: np.asarray(getattr(self, name)) for name in self._state_names}
        return {
            "kind": self.kind,
            "settings": self.get_params(),
            "classes": self.classes_.tolist(),
            "parameters": {name: list(a.shape) for name, a in arrays.items()},
            "n_parameters": int(sum(a.size for a in arrays.values())),
        }

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

    def _scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_features(self, X: np.ndarray, *, fitting: bool = False) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (n_samples, n_features), got {X.shape}")
        if len(X) == 0:
            raise ValueError("X holds no samples")
        # One sum is NaN or inf whenever any entry is (or overflows); only then look closer.
        if not np.isfinite(X.sum(dtype=np.float64)) and not np.all(np.isfinite(X)):
            raise ValueError("X holds NaN or infinite values")
        if not fitting and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features_in_}")
        return X


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


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature T minimising the cross-entropy of softmax(scores / T).

    Scores of margin-based models (templates, perceptrons) have no scale of
    their own; one fitted number makes their softmax probabilities honest
    enough to rank doubtful digits, without changing any prediction.
    """
    rows = np.arange(len(y_index))

    def nll(log_t: float) -> float:
        z = scores / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y_index]))

    spread = float(np.std(scores)) or 1.0
    result = minimize_scalar(nll, bounds=(np.log(spread) - 12, np.log(spread) + 6), method="bounded")
    return float(np.exp(result.x))
