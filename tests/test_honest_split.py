"""The test split is touched once, after training: nothing a run chooses may depend on it.

The check of issue 13: train twice on the same training images, once with the
real test labels and once with them shuffled (and the test images reversed).
If any choice (an early stop, a kept epoch, ``target_accuracy``, a
calibration) looked at the test split, the two models would differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digitlab.data.dataset import Dataset
from digitlab.models import MODELS
from digitlab.run import RunConfig, fit_model, train, validation_fraction_of

# Small, fast settings per model; every model the CLI offers is covered.
FAST: dict[str, dict[str, object]] = {
    "majority": {},
    "random": {},
    "template": {},
    "guess-and-check": {"n_candidates": 200},
    "perceptron": {"epochs": 3},
    "softmax": {"epochs": 4, "early_stopping": True, "n_iter_no_change": 1, "tol": 0.5},
    "mlp": {"hidden": (16,), "epochs": 4, "early_stopping": True, "n_iter_no_change": 1, "tol": 0.5},
    "cnn": {"epochs": 2, "width": 4, "dense": 16, "target_accuracy": 0.5},
}


def _write(path: Path, sample: Dataset, test_labels: np.ndarray, test_images: np.ndarray) -> str:
    np.savez(path, x_train=sample.train_images[:600], y_train=sample.train_labels[:600],
             x_test=test_images, y_test=test_labels)
    return str(path)


@pytest.fixture(scope="module")
def twin_sources(sample: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two sources with the same train split and test splits that disagree entirely."""
    folder = tmp_path_factory.mktemp("twins")
    images, labels = sample.test_images[:200], sample.test_labels[:200]
    shuffled = np.random.default_rng(0).permutation(labels)
    return (_write(folder / "real.npz", sample, labels, images),
            _write(folder / "shuffled.npz", sample, shuffled, images[::-1].copy()))


def test_every_model_is_covered() -> None:
    assert set(FAST) == set(MODELS)


@pytest.mark.parametrize("kind", sorted(FAST))
def test_models_do_not_depend_on_the_test_split(kind: str, twin_sources: tuple[str, str]) -> None:
    if kind == "cnn":
        pytest.importorskip("torch")
    task = "is-2" if MODELS[kind].binary_only else "all"
    states = []
    for source in twin_sources:
        result = train(RunConfig(data=source, model=kind, task=task, seed=1, settings=dict(FAST[kind])))
        states.append(result.model.state_dict())
        assert result.metrics["test"]["count"] == 200
    real, shuffled = states
    assert real.keys() == shuffled.keys()
    for name in real:
        np.testing.assert_array_equal(real[name], shuffled[name], err_msg=f"{kind}: {name}")


def test_the_check_can_fail(sample: Dataset) -> None:
    """Passing the test split as eval_set, as runs did before, does change the CNN:
    the comparison above would catch it."""
    pytest.importorskip("torch")
    data = Dataset("tiny", sample.train_images[:600], sample.train_labels[:600],
                   sample.test_images[:200], sample.test_labels[:200])
    shuffled = data.replace(test_labels=np.random.default_rng(0).permutation(data.test_labels))
    states = []
    for version in (data, shuffled):
        as_validation = version.replace(validation_images=version.test_images,
                                        validation_labels=version.test_labels)
        model = MODELS["cnn"](epochs=3, width=4, dense=16, target_accuracy=0.3, random_state=1)
        fit_model(model, as_validation)
        states.append(model.state_dict())
    assert any(not np.array_equal(states[0][k], states[1][k]) for k in states[0])


def test_validation_split_is_carved_per_model_default(sample: Dataset, tmp_path: Path) -> None:
    assert validation_fraction_of(RunConfig(model="cnn")) == 0.1
    assert validation_fraction_of(RunConfig(model="majority")) == 0.0
    assert validation_fraction_of(RunConfig(model="cnn", validation_fraction=0.25)) == 0.25
    result = train(RunConfig(model="template", validation_fraction=0.25))
    assert result.metrics["validation"]["count"] == 1000
    assert result.metrics["train"]["count"] == 3000
    assert result.metrics["test"]["count"] == 1000
    none = train(RunConfig(model="template", validation_fraction=0))
    assert "validation" not in none.metrics
    assert none.metrics["train"]["count"] == 4000


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, True, "x"])
def test_bad_validation_fraction_is_refused(bad: object) -> None:
    from digitlab.errors import SettingsError

    with pytest.raises(SettingsError, match="validation fraction"):
        validation_fraction_of(RunConfig(model="cnn", validation_fraction=bad))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_early_stopping_watches_the_validation_data_it_is_given(kind: str, sample: Dataset) -> None:
    """Keras's validation_data: with an eval_set nothing more is held out of X."""
    X, y = sample.features("train")[:400], sample.train_labels[:400]
    X_val, y_val = sample.features("train")[400:600], sample.train_labels[400:600]
    settings = {"epochs": 3, "early_stopping": True, "random_state": 0, **({"hidden": (8,)} if kind == "mlp" else {})}
    with_val = MODELS[kind](**settings).fit(X, y, eval_set=(X_val, y_val))
    assert "holdout_loss" not in with_val.history_
    assert "val_loss" in with_val.history_
    alone = MODELS[kind](**settings).fit(X, y)
    assert "holdout_loss" in alone.history_
    # the validation data steers training: other validation labels, other weights or epochs
    flipped = MODELS[kind](**settings, n_iter_no_change=1, tol=0.0).fit(
        X, y, eval_set=(X_val, np.random.default_rng(0).permutation(y_val)))
    steady = MODELS[kind](**settings, n_iter_no_change=1, tol=0.0).fit(X, y, eval_set=(X_val, y_val))
    assert flipped.n_iter_ != steady.n_iter_ or any(
        not np.array_equal(a, b) for a, b in zip(flipped.state_dict().values(), steady.state_dict().values(), strict=False))
