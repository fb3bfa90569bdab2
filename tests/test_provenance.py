"""Where a model came from, and replaying the run that made it (issue 13, part 8)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from digitlab.cli import main
from digitlab.errors import DataError
from digitlab.io import load_model
from digitlab.run import RunConfig, load_run_config, train


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prov") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", "1700000000")
    try:
        assert main(["train", "--model", "mlp", "--hidden", "16", "--epochs", "3", "--seed", "2",
                     "--early-stopping", "true", "--out", str(out), "--quiet"]) == 0
    finally:
        mp.undo()
    return out


def test_the_model_file_holds_the_fingerprint_of_the_data_it_was_trained_on(mlp_run: Path) -> None:
    from digitlab.run import prepare_data

    _model, info = load_model(mlp_run / "model.safetensors")
    config = load_run_config(mlp_run / "config.json")
    data = prepare_data(config).with_validation(config.validation_fraction, config.seed)
    assert info.data_fingerprint == data.fingerprint()
    assert info.data_fingerprint != prepare_data(config).fingerprint()  # the split is part of it


def test_the_model_file_says_where_it_came_from(mlp_run: Path) -> None:
    _model, info = load_model(mlp_run / "model.safetensors")
    prov = info.extra["provenance"]
    assert prov["data"] == "mnist-sample"
    assert prov["split"]["seed"] == 2
    assert prov["split"]["validation_fraction"] == 0.1
    assert prov["class_counts"]["train"]["3"] == 360
    assert prov["class_counts"]["validation"]["3"] == 40
    assert prov["class_counts"]["test"]["3"] == 100
    history = json.loads((mlp_run / "metrics.json").read_text())["history"]
    kept = prov["kept_epoch"]
    assert 1 <= kept <= 3
    # early stopping keeps the epoch of the best validation accuracy, and says so
    assert history["val_accuracy"][kept - 1] == max(history["val_accuracy"])
    assert prov["kept_epoch_validation"]["val_accuracy"] == history["val_accuracy"][kept - 1]
    assert prov["created"] == "2023-11-14T22:13:20+00:00"  # SOURCE_DATE_EPOCH
    assert set(prov["versions"]) >= {"python", "digitlab", "numpy", "scikit-learn"}


def test_replaying_a_config_gives_the_same_model_file(mlp_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    again = tmp_path / "again"
    assert main(["train", "--config", str(mlp_run / "config.json"), "--out", str(again), "--quiet"]) == 0
    assert (again / "model.safetensors").read_bytes() == (mlp_run / "model.safetensors").read_bytes()
    # an option given beside --config overrides the file
    other = tmp_path / "other"
    assert main(["train", "--config", str(mlp_run / "config.json"), "--seed", "5", "--out", str(other),
                 "--quiet"]) == 0
    config = json.loads((other / "config.json").read_text())
    assert config["seed"] == 5
    assert config["settings"]["hidden"] == [16]
    assert (other / "model.safetensors").read_bytes() != (mlp_run / "model.safetensors").read_bytes()


def test_run_files_follow_the_umask(mlp_run: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "config.json", "metrics.json", "report.html"):
        mode = stat.S_IMODE((mlp_run / name).stat().st_mode)
        assert mode == 0o666 & ~mask, name


def test_load_run_config_keeps_the_full_model_settings(mlp_run: Path) -> None:
    config = load_run_config(mlp_run / "config.json")
    assert config.model == "mlp"
    assert config.validation_fraction == 0.1
    assert config.settings["hidden"] == (16,)  # a tuple again, as the model takes it
    assert config.settings["lr"] == 0.002  # a default, pinned
    assert "random_state" not in config.settings  # follows --seed


def test_configs_from_before_random_state_replay_their_rng_seed(mlp_run: Path, tmp_path: Path) -> None:
    # The seed setting was called ``rng`` before it took scikit-learn's name.
    fields = json.loads((mlp_run / "config.json").read_text())
    fields["model_settings"]["rng"] = fields["model_settings"].pop("random_state", None)
    fields["settings"]["rng"] = 7
    older = tmp_path / "config.json"
    older.write_text(json.dumps(fields))
    config = load_run_config(older)
    assert config.settings["random_state"] == 7
    assert "rng" not in config.settings


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not a JSON run configuration"),
    ("[1, 2]", "not a digitlab run configuration"),
    ('{"model": "mlp", "colour": 3}', "unknown run settings: colour"),
    ('{"model": "svm"}', "unknown model 'svm'"),
    ('{"model": "mlp", "model_settings": [1]}', "model settings must be a JSON object"),
])
def test_a_bad_config_is_one_line(tmp_path: Path, content: str, problem: str, capsys) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(DataError, match=problem):
        load_run_config(path)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "config.json" in err[0]
    assert not (tmp_path / "run").exists()


def test_get_model_shows_the_provenance(mlp_run: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    about = TestClient(create_app(mlp_run / "model.safetensors")).get("/model").json()
    assert about["provenance"]["class_counts"]["validation"]["0"] == 40
    assert about["provenance"]["kept_epoch"] >= 1
    assert about["preprocessing"]["image_shape"] == [28, 28]
    assert about["preprocessing"]["normalise"] is False


def test_a_run_without_validation_records_it(tmp_path: Path) -> None:
    result = train(RunConfig(model="template", validation_fraction=0), tmp_path / "run")
    _model, info = load_model(tmp_path / "run" / "model.safetensors")
    assert info.extra["provenance"]["split"]["validation_fraction"] == 0
    assert "validation" not in info.extra["provenance"]["class_counts"]
    assert info.extra["provenance"]["validation"] is None
    assert np.isclose(info.extra["test_accuracy"], result.metrics["test"]["accuracy"])
