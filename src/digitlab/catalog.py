"""The models' names and settings, and a run's defaults, as plain data.

The command line lists every model setting as an option, and ``digitlab --help``
should answer at once; but the models' modules import scikit-learn and SciPy
(0.7 s before anything is printed). So the parser reads this table instead of
the models' ``__init__`` signatures, and ``tests/test_startup.py`` checks that
it equals them (and :class:`digitlab.run.RunConfig`) - a changed default fails
there, with the table to paste printed in the failure.
"""

from __future__ import annotations

import importlib.util

# Each model's keyword-only ``__init__`` settings and their defaults, by ``--model`` name.
MODEL_SETTINGS: dict[str, dict[str, object]] = {
    "cnn": {
        "epochs": None, "batch_size": 128, "lr": 0.2, "weight_decay": 0.0005,
        "label_smoothing": 0.1, "augment": None, "rotate": 0.0, "zoom": 0.0, "width": 16,
        "dense": 128, "convs": 1,
        "tta": False,
        "target_accuracy": None, "device": "cpu", "precision": "auto",
        "class_weight": None, "random_state": None,
    },
    "guess-and-check": {
        "n_candidates": 5000, "weight_range": 1.0, "bias_range": 20.0, "batch_size": 2048,
        "engine": "fast", "random_state": None,
    },
    "majority": {},
    "mlp": {
        "hidden": (100,), "activation": "relu", "output": "softmax", "loss": "auto",
        "optimizer": "adam", "lr": 0.002, "momentum": 0.9, "batch_size": 200, "epochs": 30,
        "init": "auto", "alpha": 0.001, "dropout": 0.0, "standardize": False, "lr_schedule": "constant",
        "tol": 0.0001, "n_iter_no_change": 10, "early_stopping": False, "validation_fraction": 0.1,
        "class_weight": None, "random_state": None,
    },
    "perceptron": {
        "lr": 1.0, "epochs": 10, "averaged": True, "shuffle": True, "tol": 0.001,
        "n_iter_no_change": 5, "class_weight": None, "random_state": None,
    },
    "random": {"random_state": None},
    "softmax": {
        "optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 30, "momentum": 0.9,
        "alpha": 0.0001, "lr_schedule": "constant", "init": "zeros", "tol": 0.0001,
        "n_iter_no_change": 5, "early_stopping": False, "validation_fraction": 0.1,
        "class_weight": None, "random_state": None,
    },
    "template": {"metric": "dot"},
}

# Each model's ``default_validation``: the share of train images a run holds out for it
# when ``--validation-fraction`` is not given (0 for the baselines, which choose nothing).
DEFAULT_VALIDATION: dict[str, float] = {
    "cnn": 0.1, "guess-and-check": 0.1, "majority": 0.0, "mlp": 0.1, "perceptron": 0.1,
    "random": 0.0, "softmax": 0.1, "template": 0.1,
}

# RunConfig's defaults (every field but ``settings``).
RUN_DEFAULTS: dict[str, object] = {
    "data": "mnist-sample", "model": "template", "task": "all", "image_size": None,
    "deskew": False, "seed": 0, "test_fraction": 0.2, "validation_fraction": None,
    "label_column": None, "labels": None, "normalise": False,
}


def model_kinds() -> list[str]:
    """The models this installation has, sorted: the CNN only with PyTorch (as ``digitlab.models.MODELS``)."""
    has_torch = importlib.util.find_spec("torch") is not None
    return sorted(kind for kind in MODEL_SETTINGS if kind != "cnn" or has_torch)
