"""Shared fixtures: small real data made from the bundled MNIST sample."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.data.dataset import Dataset
from digitlab.data.sources import load_mnist_sample


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


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real data or cache folders."""
    base = tmp_path_factory.mktemp("digitlab-home")
    monkeypatch.setenv("DIGITLAB_DATA", str(base / "data"))
    monkeypatch.setenv("DIGITLAB_CACHE", str(base / "cache"))
