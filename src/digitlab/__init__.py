"""digitlab: handwritten-digit classification, from the classic exercises to a CNN.

>>> import digitlab
>>> data = digitlab.load("mnist-sample")
>>> model = digitlab.models.Template().fit(data.features("train"), data.train_labels)
>>> round(model.score(data.features("test"), data.test_labels), 2)
0.63

Everything else is one attribute away, imported on first use (``import digitlab``
itself stays light: no scikit-learn, matplotlib or PyTorch until they are needed):

- ``digitlab.models``: every classifier (``Softmax``, ``MLP``, ``CNN`` ...);
  ``model.summary()`` prints as a table of layers and parameters.
- ``digitlab.metrics``, ``digitlab.analysis``: accuracy, confusion, pixel
  rankings, worst-written digits.
- ``digitlab.plots``: figures of digits and weights, each a matplotlib Figure;
  ``digitlab.show_digits`` and ``digitlab.show_predictions`` for notebooks.
- ``digitlab.inspection`` / ``digitlab.inspect_model``: a model's figures and
  numbers on a dataset, shown inline in Jupyter.
- ``digitlab.maths``: ``sigmoid``, ``sigmoid_derivative``, ``one_hot``,
  ``squared_distance_cost``, as the exercises write them.
- ``digitlab.io``: save and load model files; ``digitlab.load_model`` for a reader.

Reading pictures with a saved model, prepared as ``digitlab predict`` does:

>>> reader = digitlab.load_model("runs/mlp/model.safetensors")  # doctest: +SKIP
>>> reader.read(["scan.jpg", "photos/"])  # doctest: +SKIP

``digitlab.pretrained()`` is the bundled CNN trained on the full MNIST, no training
or PyTorch needed (:mod:`digitlab.bundled`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from digitlab.errors import DataError, DataWarning, DigitlabError, SettingsError

if TYPE_CHECKING:
    from digitlab import analysis, explain, inspection, io, maths, metrics, models, plots
    from digitlab.bundled import pretrained
    from digitlab.data.dataset import Dataset
    from digitlab.data.sources import load
    from digitlab.display import show_digits, show_predictions
    from digitlab.inspection import inspect_model
    from digitlab.reader import Reader, load_model, read_digits

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DataWarning",
    "Dataset",
    "DigitlabError",
    "Reader",
    "SettingsError",
    "__version__",
    "analysis",
    "explain",
    "inspect_model",
    "inspection",
    "io",
    "load",
    "load_model",
    "maths",
    "metrics",
    "models",
    "plots",
    "pretrained",
    "read_digits",
    "show_digits",
    "show_predictions",
]

# Imported on first use: `import digitlab` (and so the command line's start-up, and
# `from digitlab import __version__`) must not pay for scikit-learn, SciPy or PyTorch.
_LAZY = {
    "explain": ("digitlab.explain", None),
    "metrics": ("digitlab.metrics", None),
    "models": ("digitlab.models", None),
    "analysis": ("digitlab.analysis", None),
    "plots": ("digitlab.plots", None),
    "inspection": ("digitlab.inspection", None),
    "inspect_model": ("digitlab.inspection", "inspect_model"),
    "io": ("digitlab.io", None),
    "maths": ("digitlab.maths", None),
    "show_digits": ("digitlab.display", "show_digits"),
    "show_predictions": ("digitlab.display", "show_predictions"),
    "Dataset": ("digitlab.data.dataset", "Dataset"),
    "load": ("digitlab.data.sources", "load"),
    "Reader": ("digitlab.reader", "Reader"),
    "load_model": ("digitlab.reader", "load_model"),
    "read_digits": ("digitlab.reader", "read_digits"),
    "pretrained": ("digitlab.bundled", "pretrained"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'digitlab' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
