"""The bundled pretrained reader: a CNN trained on the full MNIST, inside the package.

>>> model = digitlab.pretrained()             # doctest: +SKIP
>>> model.predict(X)                          # X: float32 (n, 784) in [0, 1]  # doctest: +SKIP
>>> digitlab.load_model(pretrained_path()).read("photo.jpg")  # doctest: +SKIP

``weights/mnist-cnn.safetensors`` is an ordinary digitlab model file (built by
``scripts/build_pretrained.py``; data, licence, command and accuracy in
``weights/mnist-cnn.md``). It needs only the base install: without PyTorch the
CNN predicts with its NumPy forward pass (:mod:`digitlab.models.cnn_numpy`).
``digitlab predict IMAGES`` and ``digitlab serve`` use it when no model is named.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.models import DigitClassifier

PRETRAINED_FILE = "mnist-cnn.safetensors"


def pretrained_path() -> Path:
    """Where the bundled model file is (inside the installed package)."""
    path = Path(str(files("digitlab") / "weights" / PRETRAINED_FILE))
    if not path.is_file():  # a broken install or a checkout without the file
        raise DigitlabError(f"the bundled model {path} is missing: reinstall digitlab, or "
                            "rebuild it with scripts/build_pretrained.py")
    return path


def pretrained() -> DigitClassifier:
    """The bundled CNN as an estimator (``predict``, ``predict_proba``, ``decision_function``
    on float32 features (n, 784) in [0, 1], MNIST-style; works with :func:`digitlab.explain.explain`).

    For pictures as they come (files, photos, arrays of any size), read them with
    ``digitlab.load_model(pretrained_path())``, which normalises each one first.
    """
    from digitlab.io import load_model

    model, _ = load_model(pretrained_path())
    return model
