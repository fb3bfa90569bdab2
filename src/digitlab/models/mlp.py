"""A multi-layer perceptron written from scratch in NumPy, with backprop.

The network is dense layers with one hidden activation between them::

    X (n, 784) -> [W1, b1] -> act -> (n, h1) -> ... -> [WL, bL] -> z (n, k) -> output

and the output activation (softmax, or one or k sigmoids) fused into the loss
(:mod:`digitlab.models.losses`). The blocks and their ``backward`` are in
:mod:`digitlab.models.layers`; this module is the scikit-learn shaped
estimator around them: settings, initialisation, the training loop, and
:meth:`MLP.from_sklearn` to run a fitted scikit-learn ``MLPClassifier``'s
weights through the same code.

The classic exercises, exactly (``alpha=0.0``: they use no weight decay)::

    MLP(hidden=(16,), activation="sigmoid", output="sigmoid", loss="squared-distance",
        init="uniform", epochs=0)                       # 64-16-10 sigmoid, random weights
    MLP(hidden=(25, 15), activation="sigmoid", output="sigmoid",
        loss="binary-cross-entropy", optimizer="adam", lr=0.001, alpha=0.0,
        epochs=20, tol=None)                            # 400-25-15-1 on 0 vs 1
    MLP(hidden=(500,), activation="relu", output="sigmoid", loss="sigmoid-distance",
        init="normal", optimizer="sgd", momentum=0.0, lr=50.0, alpha=0.0,
        batch_size=1000, epochs=30, tol=None)           # 784-500-10 linear-ReLU-linear
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, log_expit
from sklearn.utils.validation import check_is_fitted

from digitlab.errors import SettingsError
from digitlab.models.base import ArraySpec, DigitClassifier, softmax
from digitlab.models.layers import ACTIVATIONS, Network, n_layers
from digitlab.models.losses import LOSSES, OUTPUTS, output_activation
from digitlab.models.settings import Flag, Integer, LayerSizes, Number, OneOf, SettingsSpec
from digitlab.models.summary import ModelSummary
from digitlab.models.training import MINIBATCH_SETTINGS, Callback, LossAndGrads, MinibatchTrained

INITS = ("auto", "uniform", "normal", "he", "glorot")
_PREDICT_ROWS = 4096  # rows scored at once: bounds the float64 copies to a few tens of MB
# ``standardize`` divides each pixel by its spread but by at least this much: a corner pixel
# inked in a handful of training images would otherwise be blown up a hundredfold and its
# few values would steer the first layer (the floor is a tenth of the full pixel range).
STANDARDIZE_MIN_SCALE = 0.1



class MLP(MinibatchTrained, DigitClassifier):
    """Multi-layer perceptron trained by backpropagation and mini-batch SGD or Adam.

    Parameters
    ----------
    hidden : tuple of int
        Units of each hidden layer; ``()`` for none (then the model is a
        softmax / logistic regression). An int means one layer.
    activation : {"relu", "sigmoid", "tanh", "identity"}
        Activation of every hidden layer.
    output : {"softmax", "sigmoid"}
        ``"softmax"``: one unit per class. ``"sigmoid"``: one unit for a
        two-class task (the probability of the second class), otherwise one
        independent sigmoid per class (``predict_proba`` normalises them).
    loss : {"auto", "cross-entropy", "binary-cross-entropy", "squared-distance", "sigmoid-distance"}
        Defined exactly in :mod:`digitlab.models.losses`. ``"auto"`` (the
        default) follows the output: cross-entropy after a softmax, binary
        cross-entropy after a sigmoid. ``cross-entropy``
        needs a softmax output; ``binary-cross-entropy`` and
        ``sigmoid-distance`` (the fastai lesson's mean of ``|target -
        sigmoid(z)|``) a sigmoid output; ``squared-distance`` (mean over
        samples of ``||output - one_hot||^2``, the classic "total cost") takes either.
    optimizer : {"adam", "sgd"}
        ``"sgd"`` uses ``momentum`` (0 for plain SGD).
    lr : float
        Learning rate (step size).
    momentum : float
        SGD momentum in [0, 1).
    batch_size : int
        Samples per gradient step (the last batch of an epoch holds the rest).
    epochs : int
        Most passes over the training data. ``0`` leaves the network as
        initialised (the classic exercise's random-weight network).
    init : {"auto", "uniform", "normal", "he", "glorot"}
        ``"uniform"``: every weight and bias from U[0, 1) (the classic
        exercise); ``"normal"``: every weight and bias from N(0, 1) (the
        fastai-style ``randn`` init); ``"he"``: W ~ N(0, 2 / fan_in), b = 0;
        ``"glorot"``: W ~ U(-r, r), r = sqrt(6 / (fan_in + fan_out)), b = 0;
        ``"auto"``: He for ReLU, Glorot otherwise.
    alpha : float
        L2 penalty: the loss gains ``alpha / 2 * sum(W ** 2)`` over every weight
        (not the biases), so each step decays weights by ``lr * alpha * W``.
    dropout : float
        While training, zero each hidden unit with this probability (inverted
        dropout: survivors are scaled by 1 / (1 - dropout); prediction uses
        every unit). 0 switches it off.
    standardize : bool
        Train on standardised pixels, ``(x - mean) / max(std, 0.1)`` with each
        pixel's mean and spread over the training data, then fold that scaling
        into the first layer (``W1`` rows divided by the scale, ``b1`` shifted), so
        the fitted network takes the usual [0, 1] features and is saved and
        predicts exactly as any other. Adam then takes steps of the same size for
        faint and busy pixels: on Fashion-MNIST a 784-100-10 net reaches
        MLPClassifier's validation accuracy in 6-8 epochs instead of 16
        (``benchmarks/bench_mlp.py``). Off by default: the weights a seed gives stay.
    lr_schedule : {"constant", "cosine"}
        ``"cosine"`` lowers the rate along half a cosine from ``lr`` to 0 over
        ``epochs`` epochs, batch by batch (as ``Softmax`` does), so the last
        epochs average out the mini-batch noise.
    tol, n_iter_no_change : float or None, int
        As scikit-learn: stop when the monitored figure (training loss; the
        hold-out accuracy with ``early_stopping``) has not improved by more
        than ``tol`` for ``n_iter_no_change`` epochs. ``tol=None`` always runs
        every epoch.
    early_stopping : bool
        Monitor the accuracy on ``fit``'s ``eval_set`` (``digitlab train``
        passes its validation split) or, without one, on ``validation_fraction``
        of the training data held out (stratified), and end with the weights
        of its best epoch.
    validation_fraction : float
        Share held out for ``early_stopping`` when there is no ``eval_set``.
    class_weight : None, "balanced" or dict of label to float
        Multiplies each sample's loss (any ``loss``) by its class's weight, as
        scikit-learn's ``class_weight``: ``"balanced"`` weighs class ``c`` by
        ``n_samples / (n_classes * count_c)``; a dict gives weights by label
        (1 for labels it leaves out). The training and hold-out losses are
        weighted; ``val_loss`` is not.
    random_state : int, Generator or None
        Seeds initialisation, shuffling and the hold-out; an int gives the
        same weights at every fit.

    Attributes
    ----------
    params_ : dict of str to ndarray
        ``W1`` (n_features, h1), ``b1`` (h1,), ..., ``WL`` (h_{L-1}, n_out), ``bL`` (n_out,),
        float32 after ``fit``; scikit-learn's dtype after :meth:`from_sklearn`.
    coefs_, intercepts_ : list of ndarray
        The same arrays as lists, scikit-learn's way.
    history_ : dict of str to list of float
        Per epoch: ``loss`` and ``accuracy`` (running means over the epoch's
        batches; the loss without the L2 penalty), ``holdout_loss`` and
        ``holdout_accuracy`` with ``early_stopping``, ``val_loss`` and
        ``val_accuracy`` with ``eval_set``.
    n_iter_ : int
        Epochs run.
    kept_epoch_ : int
        The epoch whose weights the model holds (the best monitored one when
        it ends with the best weights, else the last).
    interrupted_ : bool
        Training was stopped by Ctrl-C (KeyboardInterrupt); the model is usable.
    stopped_early_ : bool
        Training stopped before ``epochs`` (no improvement, or diverged).

    Notes
    -----
    The defaults (784-100-10 ReLU, He init, Adam at 0.002, batches of 200, 30
    epochs, alpha 1e-3) score about 94.7% on the bundled 4,000 / 1,000 MNIST
    sample. The training loop is :class:`digitlab.models.training.MinibatchTrained`,
    shared with ``Softmax``: while ``fit`` trains on mini-batches whose largest
    product has fewer than ``SINGLE_THREAD_BELOW`` multiply-adds, BLAS runs on
    one thread (threadpoolctl).
    """

    kind: ClassVar[str] = "mlp"
    min_classes: ClassVar[int] = 2
    settings_spec: ClassVar[SettingsSpec] = {
        **MINIBATCH_SETTINGS,
        "epochs": Integer(0),  # 0: the untrained network, as the exercises start
        "hidden": LayerSizes(),
        "activation": OneOf(tuple(ACTIVATIONS)),
        "output": OneOf(OUTPUTS),
        "loss": OneOf(("auto", *LOSSES)),
        "init": OneOf(INITS),
        "dropout": Number(0.0, 1.0, closed="left"),
        "standardize": Flag(),
    }
    _state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (100,),
        activation: str = "relu",
        output: str = "softmax",
        loss: str = "auto",
        optimizer: str = "adam",
        lr: float = 0.002,
        momentum: float = 0.9,
        batch_size: int = 200,
        epochs: int = 30,
        init: str = "auto",
        alpha: float = 0.001,
        dropout: float = 0.0,
        standardize: bool = False,
        lr_schedule: str = "constant",
        tol: float | None = 1e-4,
        n_iter_no_change: int = 10,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        class_weight: str | dict[int, float] | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.output = output
        self.loss = loss
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.init = init
        self.alpha = alpha
        self.dropout = dropout
        self.standardize = standardize
        self.lr_schedule = lr_schedule
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.random_state = random_state

    # ------------------------------------------------------------ fit

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        callback: Callback | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> MLP:
        """Train on features ``X`` (n_samples, n_features) and labels ``y`` (n_samples,).

        Parameters
        ----------
        callback : callable(Progress), optional
            Called after every epoch with the figures so far. Raising
            ``KeyboardInterrupt`` in it stops training cleanly, as Ctrl-C does.
        eval_set : (X_val, y_val), optional
            Validation data to report ``val_loss`` and ``val_accuracy`` on after
            each epoch; with ``early_stopping`` its accuracy is watched.
        """
        self._checked_fit(X, y, callback=callback, eval_set=eval_set)
        return self

    def _fit(
        self,
        X: np.ndarray,
        y_index: np.ndarray,
        *,
        callback: Callback | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        hidden = self._hidden_sizes()
        n_out = self._n_outputs(self.output, len(self.classes_))
        loss = LOSSES[self._loss_name()](self.output)
        alpha = float(self.alpha)
        # The network trains on standardised pixels; the scaling is folded into W1, b1 below.
        scaling = input_scaling(X) if self.standardize else None

        def build(n_features: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], LossAndGrads]:
            sizes = (n_features, *hidden, n_out)
            self.params_ = init_params(sizes, self.init, self.activation, rng)
            network = Network(self.params_, self.activation, dropout=float(self.dropout), rng=rng)

            def step(X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None,
                     backward: bool) -> tuple[float, dict[str, np.ndarray] | None, np.ndarray]:
                if scaling is not None:
                    X = X - scaling[0]  # a new array: an eval set is the caller's
                    X *= scaling[1]
                value, predicted = network.loss_and_grads(
                    X, Y, loss, alpha if backward else 0.0, backward=backward,
                    sample_weight=sample_weight)
                return value, network.grads if backward else None, predicted

            return self.params_, step

        # With early stopping the accuracy is watched, as scikit-learn's MLP does.
        self._train(X, y_index, n_out=n_out, build=build, watch="accuracy", eval_set=eval_set,
                    callback=callback)
        if scaling is not None:
            fold_input_scaling(self.params_, *scaling)

    def _loss_name(self) -> str:
        """``loss``, with "auto" made the output's own: (binary) cross-entropy."""
        if self.loss != "auto":
            return str(self.loss)
        return "cross-entropy" if self.output == "softmax" else "binary-cross-entropy"

    def _check_combination(self) -> None:
        if self.output not in LOSSES[self._loss_name()].outputs:
            fits = [name for name, cls in LOSSES.items() if self.output in cls.outputs]
            raise SettingsError(
                f"loss {self.loss!r} does not go with output {self.output!r}; "
                f"with a {self.output} output use one of {', '.join(fits)}"
            )

    def _hidden_sizes(self) -> tuple[int, ...]:
        """``hidden`` as a tuple of ints (one int is one layer); checked before."""
        hidden = self.hidden
        return (int(hidden),) if isinstance(hidden, Integral) else tuple(int(h) for h in hidden)

    @staticmethod
    def _n_outputs(output: str, n_classes: int) -> int:
        # A two-class task with a sigmoid output has a single unit: P(second class).
        return 1 if output == "sigmoid" and n_classes == 2 else n_classes

    # ------------------------------------------------------------ predict

    def _logits(self, X: np.ndarray) -> np.ndarray:
        """Raw output z (n, n_out) of the network, in float64, a block of rows at a time.

        float64 whatever the parameters' dtype: float32 products round differently as
        BLAS blocks a batch or its subset (1e-7), and an image's scores must not depend
        on its batch. About twice the float32 time (10,000 images, 100 hidden units:
        14 -> 29 ms); no prediction on the bundled sample changed. Training keeps float32.
        """
        count = n_layers(self.params_)
        layers = [(self.params_[f"W{i}"].astype(np.float64), self.params_[f"b{i}"].astype(np.float64))
                  for i in range(1, count + 1)]
        activation = ACTIVATIONS[self.activation]()
        out = np.empty((len(X), layers[-1][0].shape[1]))
        for start in range(0, len(X), _PREDICT_ROWS):
            a = X[start : start + _PREDICT_ROWS].astype(np.float64)
            for i, (W, b) in enumerate(layers, start=1):
                z = a @ W
                z += b
                a = activation.forward(z) if i < count else z
            out[start : start + _PREDICT_ROWS] = a
        return out

    def layer_activations(self, X: np.ndarray) -> list[np.ndarray]:
        """Every layer's activations, to look inside the network: each hidden layer's
        (after its activation), then the outputs' (as :meth:`output_activations`).

        For ``MLP(hidden=(16,))`` on 64 pixels: ``[(n, 16), (n, n_outputs)]``. Which
        hidden units fire, which saturate (a sigmoid near 0 or 1 learns slowly).
        """
        check_is_fitted(self, "classes_")
        count = n_layers(self.params_)
        activation = ACTIVATIONS[self.activation]()
        a = self._check_features(X).astype(np.float64)
        out = []
        for i in range(1, count + 1):
            z = a @ self.params_[f"W{i}"].astype(np.float64) + self.params_[f"b{i}"]
            a = activation.forward(z) if i < count else output_activation(z, self.output)
            out.append(a)
        return out

    def output_activations(self, X: np.ndarray) -> np.ndarray:
        """The output layer's activations a, shape (n_samples, n_outputs), as the network
        computes them: the softmax, or each unit's sigmoid, *not* normalised to sum to 1
        (the classic exercise's cost is on these: ``maths.squared_distance_cost(a, y)``).

        One sigmoid unit for two classes gives one column, P(``classes_[1]``).
        """
        check_is_fitted(self, "classes_")
        return output_activation(self._logits(self._check_features(X)), self.output)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        z = self._logits(X)
        if z.shape[1] == 1:
            # One sigmoid unit: scores (0, z) so that softmax(scores) = (1 - s, s).
            return np.column_stack([np.zeros(len(z)), z[:, 0]])
        return z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes); rows sum to 1.

        Softmax output: the softmax. One sigmoid unit: (1 - s, s). One sigmoid
        per class: the sigmoids normalised to sum to 1.
        """
        scores = self._class_scores(X)
        if self.output == "softmax":
            return softmax(scores)
        if len(self.classes_) == 2:
            p = expit(scores[:, 1])
            return np.column_stack([1.0 - p, p])
        # s_k / sum_j s_j, as a softmax of log s_k, so tiny sigmoids never give 0 / 0.
        return softmax(log_expit(scores))

    # ------------------------------------------------------------ state

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices ``W1 .. WL`` as a list (views of ``params_``)."""
        return [self.params_[f"W{i}"] for i in range(1, n_layers(self.params_) + 1)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors ``b1 .. bL`` as a list (views of ``params_``)."""
        return [self.params_[f"b{i}"] for i in range(1, n_layers(self.params_) + 1)]

    def linear_weights(self) -> np.ndarray | None:
        """Pixel weights when the scores are linear in the pixels, else None.

        That is a network without hidden layers, or with identity activations
        (the product W1 @ ... @ WL). Shape (n_outputs, n_features): one row per
        class, or a single row scoring ``classes_[1]`` for one sigmoid unit.
        """
        check_is_fitted(self, "classes_")
        if n_layers(self.params_) > 1 and self.activation != "identity":
            return None
        product = self.coefs_[0]
        for W in self.coefs_[1:]:
            product = product @ W
        return np.ascontiguousarray(product.T)

    def hidden_weights(self) -> np.ndarray | None:
        """First-layer weights (n_hidden, n_features), one row per hidden unit; None without
        hidden layers."""
        check_is_fitted(self, "classes_")
        if n_layers(self.params_) == 1:
            return None
        return np.ascontiguousarray(self.params_["W1"].T)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``W1``, ``b1``, ..., ``WL``, ``bL``, ``classes_`` and ``n_features_in_`` (copies)."""
        check_is_fitted(self, "classes_")
        state = {name: value.copy() for name, value in self.params_.items()}
        state["classes_"] = np.array(self.classes_, copy=True)
        state["n_features_in_"] = np.array(self.n_features_in_, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> MLP:
        """Set the weights from :meth:`state_dict` output.

        The names and shapes must be those the settings ``hidden`` and
        ``output`` give (see :meth:`check_state`); float32 or float64.
        Written by hand, ``state`` may leave out ``n_features_in_`` (the rows of
        ``W1``) and ``classes_`` (then 0 .. n_outputs - 1, or 0 and 1 for one
        sigmoid unit): the weights' sizes say them.
        """
        state = self._with_sizes(state)
        self.check_state(state)
        self.params_ = {name: np.array(value, copy=True) for name, value in state.items()
                        if name not in ("classes_", "n_features_in_")}
        self.classes_ = np.array(state["classes_"], copy=True)
        self.n_features_in_ = int(state["n_features_in_"])
        return self

    @staticmethod
    def _with_sizes(state: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """``state`` with ``n_features_in_`` and ``classes_`` filled in from the weights'
        shapes where it leaves them out (see :meth:`load_state_dict`)."""
        filled = dict(state)
        first, last = np.shape(state.get("W1", ())), np.shape(state.get(f"W{sum(name.startswith('W') for name in state)}", ()))
        if len(first) == 2:
            filled.setdefault("n_features_in_", np.array(first[0], dtype=np.int64))
        if len(last) == 2:
            filled.setdefault("classes_", np.arange(2 if last[1] == 1 else last[1], dtype=np.int64))
        return filled

    @classmethod
    def from_layer_sizes(
        cls,
        sizes: Sequence[int],
        *,
        activation: str = "sigmoid",
        output: str | None = None,
        init: str = "uniform",
        classes: Sequence[Any] | np.ndarray | None = None,
        random_state: int | np.random.Generator | None = None,
        **settings: Any,
    ) -> MLP:
        """An untrained, usable network of layer sizes ``(n_features, h1, ..., n_outputs)``,
        the exercise's ``MLP([64, 16, 10])``.

        ``predict``, ``predict_proba``, ``output_activations`` and ``summary`` work at
        once; ``fit`` trains it from a fresh initialisation. ``output`` defaults to
        the hidden ``activation`` when that is "sigmoid" (the exercise's network is
        sigmoid throughout), else "softmax". ``init="uniform"`` is the exercise's
        U[0, 1) for every weight and bias (see ``init``), drawn with ``random_state``
        (the same seed, the same weights). ``classes`` defaults to 0 .. n_outputs - 1 (0 and 1
        for a single sigmoid unit). Other settings (``lr``, ``epochs`` ...) are passed on.
        """
        sizes = tuple(int(n) for n in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise SettingsError(f"sizes must be at least (n_features, n_outputs), each 1 or more; got {sizes}")
        if output is None:
            output = "sigmoid" if activation == "sigmoid" else "softmax"
        model = cls(hidden=sizes[1:-1], activation=activation, output=output, init=init,
                    random_state=random_state, **settings)
        model._check_settings()
        labels = np.arange(2 if sizes[-1] == 1 else sizes[-1]) if classes is None else np.asarray(classes)
        if model._n_outputs(output, len(labels)) != sizes[-1]:
            raise SettingsError(f"{len(labels)} classes with output {output!r} need "
                                f"{model._n_outputs(output, len(labels))} output units, not {sizes[-1]}")
        state = init_params(sizes, init, activation, np.random.default_rng(random_state))
        return model.load_state_dict({**state, "classes_": labels,
                                      "n_features_in_": np.array(sizes[0], dtype=np.int64)})

    def _layer_sizes(self, n_features: int, n_classes: int) -> tuple[int, ...]:
        """(n_features, h1, ..., n_out): the units of every layer, from the settings."""
        self._check_settings()
        return (n_features, *self._hidden_sizes(), self._n_outputs(self.output, n_classes))

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        spec: dict[str, ArraySpec] = {}
        for i, (fan_in, fan_out) in enumerate(pairwise(self._layer_sizes(n_features, n_classes)),
                                              start=1):
            spec[f"W{i}"], spec[f"b{i}"] = ArraySpec((fan_in, fan_out)), ArraySpec((fan_out,))
        return spec

    def _state_note(self, n_features: int, n_classes: int) -> str:
        return (f"hidden={self.hidden!r} and output={self.output!r} with {n_classes} "
                f"classes give layer sizes {self._layer_sizes(n_features, n_classes)}")

    def summary(self) -> ModelSummary:
        """Kind, settings, and per layer: sizes, activation, weight and bias shapes and counts
        (a dict that prints as a table, :class:`~digitlab.models.summary.ModelSummary`).

        ``layers`` lists one dict per dense layer; ``n_parameters`` is the total
        (400-25-15-1: 10,025 + 390 + 16 = 10,431).
        """
        check_is_fitted(self, "classes_")
        count = n_layers(self.params_)
        layers: list[dict[str, Any]] = []
        for i in range(1, count + 1):
            W, b = self.params_[f"W{i}"], self.params_[f"b{i}"]
            activation = self.activation if i < count else self.output
            layers.append({
                "name": f"dense{i}",
                "type": f"Dense {W.shape[0]} -> {W.shape[1]}, {activation}",
                "output_shape": [int(W.shape[1])],
                "inputs": int(W.shape[0]),
                "units": int(W.shape[1]),
                "activation": activation,
                "weight_shape": list(W.shape),
                "bias_shape": list(b.shape),
                "n_parameters": int(W.size + b.size),
            })
        return ModelSummary({
            "kind": self.kind,
            "settings": self.get_params(),
            "classes": self.classes_.tolist(),
            "layers": layers,
            "parameters": {name: list(value.shape) for name, value in self.params_.items()},
            "n_parameters": int(sum(layer["n_parameters"] for layer in layers)),
        })

    # ------------------------------------------------------------ scikit-learn

    @classmethod
    def from_sklearn(cls, fitted: Any) -> MLP:
        """An MLP computing exactly what a fitted scikit-learn ``MLPClassifier`` computes.

        Takes its ``coefs_`` / ``intercepts_`` (in their dtype, float64 when it was
        fitted on float64), ``activation``, ``out_activation_`` and ``classes_``;
        the other settings are carried over where digitlab has them, so a refit
        trains a similar network (scikit-learn's ``alpha`` is divided by its batch
        size: it scales the penalty by 1 / batch size, digitlab does not).
        """
        check_is_fitted(fitted, "coefs_")
        activations = {"logistic": "sigmoid", "tanh": "tanh", "relu": "relu", "identity": "identity"}
        outputs = {"softmax": "softmax", "logistic": "sigmoid"}
        if fitted.activation not in activations:
            raise SettingsError(f"unsupported scikit-learn activation {fitted.activation!r}")
        if fitted.out_activation_ not in outputs:
            raise SettingsError(f"unsupported scikit-learn output {fitted.out_activation_!r}")
        classes = np.asarray(fitted.classes_)
        if classes.ndim != 1 or (fitted.out_activation_ == "logistic" and len(classes) != 2):
            raise SettingsError("multi-label MLPClassifier models are not supported")
        output = outputs[fitted.out_activation_]
        n_samples_batch = 200 if fitted.batch_size == "auto" else int(fitted.batch_size)
        hidden = fitted.hidden_layer_sizes
        hidden = (int(hidden),) if isinstance(hidden, Integral) else tuple(int(h) for h in hidden)
        model = cls(
            hidden=hidden,
            activation=activations[fitted.activation],
            output=output,
            loss="cross-entropy" if output == "softmax" else "binary-cross-entropy",
            optimizer="sgd" if fitted.solver == "sgd" else "adam",
            lr=float(fitted.learning_rate_init),
            momentum=float(fitted.momentum),
            batch_size=n_samples_batch,
            epochs=int(fitted.max_iter),
            init="glorot",
            alpha=float(fitted.alpha) / n_samples_batch,
            dropout=0.0,
            lr_schedule="constant",
            tol=float(fitted.tol),
            n_iter_no_change=int(fitted.n_iter_no_change),
            early_stopping=bool(fitted.early_stopping),
            validation_fraction=float(fitted.validation_fraction),
            random_state=int(fitted.random_state) if isinstance(fitted.random_state, Integral) else None,
        )
        state: dict[str, np.ndarray] = {}
        for i, (W, b) in enumerate(zip(fitted.coefs_, fitted.intercepts_, strict=True), start=1):
            state[f"W{i}"], state[f"b{i}"] = np.array(W), np.array(b)
        state["classes_"] = classes
        state["n_features_in_"] = np.array(fitted.n_features_in_)
        model.load_state_dict(state)
        model.history_ = {"loss": [float(v) for v in getattr(fitted, "loss_curve_", [])]}
        model.n_iter_ = int(fitted.n_iter_)
        model.interrupted_ = False
        model.stopped_early_ = int(fitted.n_iter_) < int(fitted.max_iter)
        return model


# ---------------------------------------------------------------- helpers


def init_params(
    sizes: Sequence[int], init: str, activation: str, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Float32 ``W1, b1, ..., WL, bL`` for layer sizes (n_in, h1, ..., n_out).

    Drawn in float64 layer by layer (W then b), so a seed fixes the weights.
    """
    if init == "auto":
        init = "he" if activation == "relu" else "glorot"
    params: dict[str, np.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes), start=1):
        shape = (fan_in, fan_out)
        if init == "uniform":
            W, b = rng.random(shape), rng.random(fan_out)
        elif init == "normal":
            W, b = rng.standard_normal(shape), rng.standard_normal(fan_out)
        elif init == "he":
            W, b = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape), np.zeros(fan_out)
        elif init == "glorot":
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            W, b = rng.uniform(-bound, bound, shape), np.zeros(fan_out)
        else:
            raise SettingsError(f"init must be one of {', '.join(INITS)}; got {init!r}")
        params[f"W{i}"], params[f"b{i}"] = W.astype(np.float32), b.astype(np.float32)
    return params


def input_scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean (n_features,) and 1 / max(std, ``STANDARDIZE_MIN_SCALE``), float32.

    Summed in float64 over a block of rows at a time (the 60,000 x 784 images in
    float64 at once would be 376 MB).
    """
    n = len(X)
    total, squares = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for start in range(0, n, _PREDICT_ROWS):
        block = X[start : start + _PREDICT_ROWS].astype(np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    inverse = 1.0 / np.maximum(std, STANDARDIZE_MIN_SCALE)
    return mean.astype(np.float32), inverse.astype(np.float32)


def fold_input_scaling(params: dict[str, np.ndarray], mean: np.ndarray, inverse: np.ndarray) -> None:
    """Rewrite ``W1``, ``b1`` (in place, their dtype) so that the network takes raw features.

    ((x - mean) * inverse) @ W1 + b1 = x @ (inverse[:, None] * W1) + (b1 - (mean * inverse) @ W1);
    computed in float64, then rounded once.
    """
    W = params["W1"].astype(np.float64)
    scaled_mean = mean.astype(np.float64) * inverse.astype(np.float64)
    params["b1"][...] = params["b1"].astype(np.float64) - scaled_mean @ W
    params["W1"][...] = W * inverse.astype(np.float64)[:, None]
