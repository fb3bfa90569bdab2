"""Export a fitted model to ONNX, so any ONNX runtime can read digits without digitlab.

The file takes one input and gives two outputs::

    pixels         float32 (n, h*w)  pixel / 255 of light-ink-on-dark images, row by row
    probabilities  float32 (n, k)    in the order of the model's classes (``classes`` below)
    label          int64 (n,)        the class the model predicts

The NumPy models are written as plain ONNX graphs (MatMul, Add, Relu, Sigmoid,
Softmax, ArgMax ...) that redo their ``predict_proba`` and ``predict`` step by
step, in the same floating-point precision (float64 where the model computes
in float64); the CNN goes through ``torch.onnx.export``. The preparation of an
image (what ``digitlab predict`` does before the model sees it) cannot be a
graph: it is written into the file's metadata (``metadata_props``) instead,
with the classes, their names, the task and the digitlab version.

One model is exported as an equivalent rather than the same arithmetic: the
random baseline hashes each image's float32 bits with 64-bit integer arithmetic
(splitmix64), which no ONNX operator computes. Its graph draws the scores
with ONNX's ``RandomUniformLike`` instead: the same law (softmax of k uniform
numbers in [0, 1) per image), not the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from digitlab import __version__
from digitlab.atomic import atomic_file, check_writable_location
from digitlab.calibration import EPS, calibration_of, temperature_of
from digitlab.errors import DigitlabError, OutputError, SettingsError
from digitlab.io import ModelInfo, load_model
from digitlab.models import DigitClassifier

if TYPE_CHECKING:
    import onnx

# Opset 17 and IR version 8 (ONNX 1.12, 2022): every onnxruntime since 1.12 reads them.
OPSET = 17
IR_VERSION = 8
INPUT = "pixels"
OUTPUTS = ("probabilities", "label")
INPUT_DESCRIPTION = (
    "float32 (n, h*w): each image's pixels / 255 in [0, 1], row by row, prepared as the model's "
    "training images were (MNIST-style: light ink (1) on a dark background (0)); "
    "'digitlab.preprocessing' records how, so prepare a photo or scan that way first"
)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_onnx` wrote."""

    path: Path
    kind: str
    n_bytes: int


def export_onnx(model_path: str | Path, out: str | Path) -> Exported:
    """Write the model file at ``model_path`` as an ONNX file at ``out`` (atomically).

    ``out`` is checked before any work; a bad model file is a DataError naming it.
    """
    check_writable_location(out)
    if Path(out).resolve() == Path(model_path).resolve():
        raise OutputError(out, "is the model file itself; choose another name for the ONNX file")
    model, info = load_model(model_path)
    proto = to_onnx(model, info)
    with atomic_file(out) as tmp:
        _import_onnx().save_model(proto, tmp)
    return Exported(Path(out), info.kind, Path(out).stat().st_size)


def to_onnx(model: DigitClassifier, info: ModelInfo) -> onnx.ModelProto:
    """The ONNX model of a fitted ``model`` with its file's metadata ``info``."""
    onnx = _import_onnx()
    classes = np.asarray(model.classes_)
    if classes.dtype.kind not in "iu":  # model files hold integer labels only
        raise SettingsError(f"ONNX export needs integer class labels, got {classes.dtype}")
    if info.kind == "cnn":
        proto = _cnn_graph(model)
    elif info.kind not in _BUILDERS:
        raise SettingsError(f"no ONNX export for a {info.kind!r} model yet")
    else:
        graph = _Graph(onnx, model.n_features_in_)
        probabilities, index = _BUILDERS[info.kind](graph, model)
        proto = graph.finish(probabilities, index, classes.astype(np.int64), info.kind)
    temperature = temperature_of(calibration_of(info))
    if temperature != 1.0:
        _calibrate(onnx, proto, temperature)
    proto.producer_name, proto.producer_version = "digitlab", __version__
    proto.doc_string = f"digitlab {info.kind} model: {INPUT} -> probabilities, label"
    onnx.helper.set_model_props(proto, metadata(info))
    onnx.checker.check_model(proto)
    return proto


def _calibrate(onnx: Any, proto: Any, temperature: float) -> None:
    """Append the model file's temperature to a graph's probabilities, as
    :func:`digitlab.calibration.scale` applies it: ``softmax(log(clip(p)) / T)`` in
    float64. The label stays: scaling never changes which class is largest."""
    graph, helper, tensor = proto.graph, onnx.helper, onnx.TensorProto
    raw = "uncalibrated_probabilities"
    for node in graph.node:
        node.output[:] = [raw if name == OUTPUTS[0] else name for name in node.output]
    for info in graph.value_info:
        if info.name == OUTPUTS[0]:
            info.name = raw
    constants = {"calibration_eps": EPS, "calibration_one": 1.0, "calibration_t": temperature}
    graph.initializer.extend(helper.make_tensor(name, tensor.DOUBLE, [], [value])
                             for name, value in constants.items())
    steps = [("Cast", [raw], {"to": tensor.DOUBLE}),
             ("Clip", ["calibration_eps", "calibration_one"], {}),
             ("Log", [], {}), ("Div", ["calibration_t"], {}), ("Softmax", [], {"axis": 1}),
             ("Cast", [], {"to": tensor.FLOAT})]
    previous = None
    for i, (op, inputs, attributes) in enumerate(steps):
        first: list[str] = [previous] if previous is not None else []
        output = OUTPUTS[0] if i == len(steps) - 1 else f"calibration_{i}"
        graph.node.append(helper.make_node(op, first + inputs, [output], **attributes))
        previous = output


def metadata(info: ModelInfo) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: how to prepare its input, what comes out."""
    return {
        "digitlab.version": __version__,  # the exporting digitlab
        "digitlab.trained_with": info.digitlab_version,
        "digitlab.kind": info.kind,
        "digitlab.task": str(info.extra.get("task", "all")),
        "digitlab.input": INPUT_DESCRIPTION,
        "digitlab.input_shape": json.dumps(info.input_shape),  # (h, w) of the images
        "digitlab.preprocessing": json.dumps(info.preprocessing, sort_keys=True),
        "digitlab.classes": json.dumps(info.classes),  # the order of the probabilities
        "digitlab.class_names": json.dumps(info.class_names),
        # applied in the graph already; written for the record
        "digitlab.temperature": json.dumps(temperature_of(calibration_of(info))),
    }


def _import_onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError:
        raise DigitlabError(
            "ONNX export needs the onnx extra: pip install 'digitlab[onnx]'") from None
    return onnx


# ---------------------------------------------------------------- NumPy models as graphs


class _Graph:
    """Nodes and constants of one ONNX graph, each output named by a counter."""

    def __init__(self, onnx: Any, n_features: int) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self.n_features = n_features
        self._count = 0

    def const(self, array: npt.ArrayLike, dtype: npt.DTypeLike = np.float64) -> str:
        name = self._name("c")
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        name = self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], **attributes))
        return name

    def pixels(self, dtype: np.dtype[Any]) -> str:
        """The input in ``dtype``: float32 as given, float64 for models computing in it."""
        return INPUT if dtype == np.float32 else self.op("Cast", INPUT, to=self._type(dtype))

    def dense(self, x: str, weights: np.ndarray, bias: np.ndarray) -> str:
        """``x @ weights + bias`` in the weights' dtype, as NumPy computes it."""
        return self.op("Add", self.op("MatMul", x, self.const(weights, weights.dtype)),
                       self.const(bias, weights.dtype))

    def rows_of(self, k: int) -> str:
        """The shape (n, k) as a tensor, n the input's rows."""
        rows = self.op("Slice", self.op("Shape", INPUT), self.const([0], np.int64),
                       self.const([1], np.int64))
        return self.op("Concat", rows, self.const([k], np.int64), axis=0)

    def double(self, x: str) -> str:
        return self.op("Cast", x, to=self.onnx.TensorProto.DOUBLE)

    def two_column(self, first: str, second: str) -> str:
        """(n, 1) and (n, 1) -> (n, 2) side by side."""
        return self.op("Concat", first, second, axis=1)

    def argmax(self, scores: str) -> str:
        # keepdims=0 gives (n,); ONNX, like NumPy, takes the first of equal maxima.
        return self.op("ArgMax", scores, axis=1, keepdims=0)

    def at_least_zero(self, score: str) -> str:
        """(n, 1) -> (n,) int64: 1 where ``score >= 0`` (the perceptrons' rule), else 0."""
        flag = self.op("GreaterOrEqual", score, self.const(0.0))
        return self.op("Reshape", self.op("Cast", flag, to=self.onnx.TensorProto.INT64),
                       self.const([-1], np.int64))

    def finish(self, probabilities: str, index: str, classes: np.ndarray, kind: str) -> Any:
        helper, tensor = self.onnx.helper, self.onnx.TensorProto
        self.nodes.append(helper.make_node("Cast", [probabilities], [OUTPUTS[0]], to=tensor.FLOAT))
        self.nodes.append(helper.make_node("Gather", [self.const(classes, np.int64), index],
                                           [OUTPUTS[1]], axis=0))
        graph = helper.make_graph(
            self.nodes, f"digitlab_{kind}".replace("-", "_"),
            [helper.make_tensor_value_info(INPUT, tensor.FLOAT, ["n", self.n_features])],
            [helper.make_tensor_value_info(OUTPUTS[0], tensor.FLOAT, ["n", len(classes)]),
             helper.make_tensor_value_info(OUTPUTS[1], tensor.INT64, ["n"])],
            initializer=self.constants,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 ir_version=IR_VERSION)

    def _type(self, dtype: np.dtype[Any]) -> int:
        return int(self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"


def _softmax(g: _Graph, scores: str, temperature: float | None = None) -> str:
    """Row softmax of float64 ``scores``, divided by ``temperature`` first if given."""
    if temperature is not None:
        scores = g.op("Div", scores, g.const(float(temperature)))
    return g.op("Softmax", scores, axis=1)


def _majority(g: _Graph, model: Any) -> tuple[str, str]:
    # The training class frequencies for every row.
    prior = np.asarray(model.class_prior_, np.float64)[None, :]  # (1, k)
    probabilities = g.op("Expand", g.const(prior), g.rows_of(prior.shape[1]))
    return probabilities, g.argmax(probabilities)


def _random(g: _Graph, model: Any) -> tuple[str, str]:
    # (n, k) scores uniform in [0, 1), drawn like a tensor of that shape.
    shaped = g.op("Expand", g.const(0.0), g.rows_of(len(model.classes_)))
    scores = g.op("RandomUniformLike", shaped, dtype=g.onnx.TensorProto.DOUBLE,
                  seed=float(int(model.seed_) % 2**24))  # a float attribute: exact below 2**24
    return _softmax(g, scores), g.argmax(scores)


def _template(g: _Graph, model: Any) -> tuple[str, str]:
    templates = np.asarray(model.templates_, np.float64)  # the model scores in float64
    x = g.pixels(np.dtype(np.float64))
    if model.metric == "euclidean":
        # -||x - t||^2 ranked as x.(2t) - ||t||^2, as the model does.
        norms = np.einsum("kd,kd->k", templates, templates)
        scores = g.dense(x, 2.0 * templates.T, -norms)
    else:
        scores = g.op("MatMul", x, g.const(templates.T))  # (n, k), as x @ t.T
    return _softmax(g, scores, float(model.temperature_)), g.argmax(scores)


def _softmax_regression(g: _Graph, model: Any) -> tuple[str, str]:
    coef = np.asarray(model.coef_)
    z = g.double(g.dense(g.pixels(coef.dtype), coef, np.asarray(model.intercept_)))
    if coef.shape[1] == 1:  # scores (0, z): class 1 only when z > 0, as argmax does
        scores = g.two_column(g.op("Sub", z, z), z)
        return _softmax(g, scores), g.argmax(scores)
    return _softmax(g, z), g.argmax(z)


def _mlp(g: _Graph, model: Any) -> tuple[str, str]:
    count = len(model.coefs_)
    a = g.pixels(np.dtype(np.float64))  # the model predicts in float64 whatever its weights
    hidden = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": None}[model.activation]
    for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True), start=1):
        a = g.dense(a, np.asarray(W, np.float64), np.asarray(b, np.float64))
        if i < count and hidden is not None:
            a = g.op(hidden, a)
    z = a
    if model.output == "softmax":
        return _softmax(g, z), g.argmax(z)
    if len(model.classes_) == 2:  # one sigmoid unit: (1 - s, s); scores (0, z)
        p = g.op("Sigmoid", z)
        probabilities = g.two_column(g.op("Sub", g.const([[1.0]]), p), p)
        return probabilities, g.argmax(g.two_column(g.op("Sub", z, z), z))
    # One sigmoid per class, normalised as softmax(log sigmoid(z)). log sigmoid(z) =
    # min(z, 0) - log(1 + exp(-|z|)) never overflows (onnxruntime has no float64 Softplus).
    log_sigmoid = g.op("Sub", g.op("Min", z, g.const(0.0)),
                       g.op("Log", g.op("Add", g.const(1.0),
                                        g.op("Exp", g.op("Neg", g.op("Abs", z))))))
    return _softmax(g, log_sigmoid), g.argmax(z)


def _perceptron(g: _Graph, model: Any) -> tuple[str, str]:
    return _linear_margins(g, model.coef_, model.intercept_, float(model.temperature_))


def _guess_and_check(g: _Graph, model: Any) -> tuple[str, str]:
    # One weight vector (d,) and a bias (): the two-class perceptron, without a temperature.
    return _linear_margins(g, np.asarray(model.coef_)[None, :], np.asarray(model.intercept_)[None],
                           1.0)


def _linear_margins(g: _Graph, coef: np.ndarray, intercept: np.ndarray,
                    temperature: float) -> tuple[str, str]:
    """The perceptrons: margins ``s = x @ coef.T + intercept`` (coef (K, d)) in float64.

    One margin (two classes): scores (-s/2, s/2), class 1 when s >= 0. Else the largest wins.
    """
    coef = np.asarray(coef, np.float64)
    s = g.dense(g.pixels(np.dtype(np.float64)), coef.T, np.asarray(intercept, np.float64))
    if coef.shape[0] == 1:
        half = g.op("Mul", s, g.const(0.5))
        return _softmax(g, g.two_column(g.op("Neg", half), half), temperature), g.at_least_zero(s)
    return _softmax(g, s, temperature), g.argmax(s)


_BUILDERS = {
    "majority": _majority,
    "random": _random,
    "template": _template,
    "softmax": _softmax_regression,
    "mlp": _mlp,
    "perceptron": _perceptron,
    "guess-and-check": _guess_and_check,
}


# ---------------------------------------------------------------- the CNN through torch


def _cnn_graph(model: Any) -> Any:
    import torch

    try:
        import onnxscript  # noqa: F401  # torch's exporter builds the graph with it
    except ModuleNotFoundError:
        raise DigitlabError("ONNX export of a CNN needs onnxscript (in the onnx extra): "
                            "pip install 'digitlab[onnx]'") from None

    from digitlab.models.cnn import TTA_SHIFTS, _shift_fixed, image_side, pixels_to_images

    side = image_side(model.n_features_in_)
    network = model.network_.cpu().eval()
    classes = torch.as_tensor(np.asarray(model.classes_, np.int64))

    class Exportable(torch.nn.Module):
        """pixels (n, side*side) -> (probabilities float32 (n, k), label int64 (n,)), as
        ``CNN.predict_proba`` and ``CNN.predict`` compute them."""

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            images = pixels_to_images(pixels, side)  # zeros after features that are not square
            if not model.tta:
                logits = network(images).double()
                return torch.softmax(logits, dim=1).float(), classes[logits.argmax(dim=1)]
            # The shifted copies through the network in one batch (t*n, 1, s, s): called once,
            # the exported file holds the weights once, not once per shift.
            shifted = torch.cat([_shift_fixed(images, dy, dx) for dy, dx in TTA_SHIFTS])
            logits = network(shifted).double().reshape(len(TTA_SHIFTS), -1, len(classes))
            proba = torch.softmax(logits, dim=2).mean(0)
            return proba.float(), classes[proba.argmax(dim=1)]

    example = torch.zeros((2, model.n_features_in_))
    with _quiet_exporter():
        program = torch.onnx.export(
            Exportable().eval(), (example,), dynamo=True, input_names=[INPUT],
            output_names=list(OUTPUTS), dynamic_shapes=({0: torch.export.Dim("n")},),
            verbose=False)
    assert program is not None  # export returns the program when given no file to write
    return program.model_proto


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch's exporter logs a line per missing torchvision operator and warns about its
    own internals: nothing a user can act on, so neither reaches them."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
