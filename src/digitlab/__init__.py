"""digitlab: handwritten-digit classification, from the classic exercises to a CNN.

>>> import digitlab
>>> data = digitlab.load("mnist-sample")
>>> model = digitlab.models.Template().fit(data.features("train"), data.train_labels)
>>> round(model.score(data.features("test"), data.test_labels), 2)
0.63
"""

from __future__ import annotations

from digitlab import metrics, models
from digitlab.data.dataset import Dataset
from digitlab.data.sources import load
from digitlab.errors import DataError, DataWarning, DigitlabError, SettingsError

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DataWarning",
    "Dataset",
    "DigitlabError",
    "SettingsError",
    "__version__",
    "load",
    "metrics",
    "models",
]
