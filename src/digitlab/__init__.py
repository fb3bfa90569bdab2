"""digitlab: handwritten-digit classification, from the classic exercises to a CNN.

>>> import digitlab
>>> data = digitlab.load("mnist-sample")
>>> model = digitlab.models.Template().fit(data.features("train"), data.train_labels)
>>> round(model.score(data.features("test"), data.test_labels), 2)
0.63

Reading pictures with a saved model, prepared as ``digitlab predict`` does:

>>> reader = digitlab.load_model("runs/mlp/model.safetensors")  # doctest: +SKIP
>>> reader.read(["scan.jpg", "photos/"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from digitlab.errors import DataError, DataWarning, DigitlabError, SettingsError

if TYPE_CHECKING:
    from digitlab import explain, metrics, models
    from digitlab.data.dataset import Dataset
    from digitlab.data.sources import load
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
    "explain",
    "load",
    "load_model",
    "metrics",
    "models",
    "read_digits",
]

# Imported on first use: `import digitlab` (and so the command line's start-up, and
# `from digitlab import __version__`) must not pay for scikit-learn, SciPy or PyTorch.
_LAZY = {
    "explain": ("digitlab.explain", None),
    "metrics": ("digitlab.metrics", None),
    "models": ("digitlab.models", None),
    "Dataset": ("digitlab.data.dataset", "Dataset"),
    "load": ("digitlab.data.sources", "load"),
    "Reader": ("digitlab.reader", "Reader"),
    "load_model": ("digitlab.reader", "load_model"),
    "read_digits": ("digitlab.reader", "read_digits"),
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
