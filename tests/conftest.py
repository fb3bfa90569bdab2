"""Shared fixtures: small real data made from the bundled MNIST sample."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Under pytest-xdist each worker gets one thread for torch: two workers each
# spinning two OpenMP threads on two cores made the CNN tests ten times slower.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from digitlab.data.dataset import Dataset
from digitlab.data.sources import load_mnist_sample
from digitlab.models import MODELS, DigitClassifier

# Contract tests check behaviour, not accuracy: iterative models that would
# otherwise pick a long schedule for a small training set get a short one.
QUICK_SETTINGS: dict[str, dict[str, object]] = {"cnn": {"epochs": 2}}


@pytest.fixture(scope="session")
def sample() -> Dataset:
    """The bundled sample: 4,000 train / 1,000 test real MNIST digits."""
    return load_mnist_sample()


@pytest.fixture(scope="session")
def small_splits(sample: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """50 train and 20 test digits (every class present), for writing test files."""
    return {
        "train": (sample.train_images[:50].copy(), sample.train_labels[:50].copy()),
        "test": (sample.test_images[:20].copy(), sample.test_labels[:20].copy()),
    }


@pytest.fixture(scope="session")
def seeded_model():
    """Factory: a fresh model of a kind, seeded when it draws random numbers, quick to fit."""

    def make(kind: str) -> DigitClassifier:
        model = MODELS[kind](**QUICK_SETTINGS.get(kind, {}))
        if "rng" in model.get_params():
            model.set_params(rng=0)
        return model

    return make


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real data or cache folders."""
    base = tmp_path_factory.mktemp("digitlab-home")
    monkeypatch.setenv("DIGITLAB_DATA", str(base / "data"))
    monkeypatch.setenv("DIGITLAB_CACHE", str(base / "cache"))


@pytest.fixture(scope="session")
def served_model(sample: Dataset, tmp_path_factory: pytest.TempPathFactory):
    """A run folder as `digitlab train --out` leaves it, for the web tests: an MLP fitted
    on the bundled sample (94.7% test accuracy, good enough to read drawn digits),
    metrics.json, and a small report.html (the real one costs seconds of plotting)."""
    from digitlab.atomic import write_json
    from digitlab.io import save_model
    from digitlab.models import MLP

    out = tmp_path_factory.mktemp("served-run")
    model = MLP(rng=0).fit(sample.features("train"), sample.train_labels)
    save_model(out / "model.safetensors", model, input_shape=sample.image_shape,
               class_names=sample.class_names, extra={"task": "all"})
    accuracy = model.score(sample.features("test"), sample.test_labels)
    write_json(out / "metrics.json", {"test": {"accuracy": accuracy}})
    (out / "report.html").write_text(
        "<!doctype html><title>report</title><h1>mlp on mnist-sample</h1>", encoding="utf-8")
    return out / "model.safetensors"


@contextlib.contextmanager
def _serve(model: Path, log_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`digitlab serve MODEL --port 0` in a subprocess: the process and the base URL it prints.

    Its stderr goes to ``log_dir/serve-stderr.txt``; it is stopped with Ctrl-C
    (SIGINT) at the end unless it already stopped.
    """
    log = log_dir / "serve-stderr.txt"
    with log.open("w") as stderr, subprocess.Popen(
        [sys.executable, "-m", "digitlab.cli", "serve", str(model), "--port", "0"],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the address, printed once listening
            found = re.search(r"at (http://\S+/) ", line)
            assert found, f"serve printed {line!r}; stderr: {log.read_text()}"
            yield process, found.group(1)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="session")
def serve_command():
    """A context manager running `digitlab serve` (see ``_serve``), for fixtures of any scope."""
    return _serve
