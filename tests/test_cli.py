"""The command line through main(argv), and once through the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from digitlab import __version__
from digitlab.cli import main
from digitlab.data import formats


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("digitlab: error: ")
    return lines[0]


def test_train_template_writes_metrics(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist-sample", "--model", "template", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed
    assert "10.00%" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.55 < metrics["test"]["accuracy"] < 0.75
    assert metrics["test"]["majority_baseline"] == pytest.approx(0.1)
    assert 0.55 < metrics["train"]["accuracy"] < 0.75
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "template"
    assert config["seed"] == 0


def test_train_binary_task_and_model_setting(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--data", "digits", "--task", "is-2", "--metric", "euclidean",
                 "--out", str(out), "--quiet"])
    assert code == 0
    assert capsys.readouterr().out == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["majority_baseline"] == pytest.approx(1 - 77 / 797)
    assert json.loads((out / "config.json").read_text())["settings"] == {"metric": "euclidean"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "no-such-data", "--out", "{out}"], "no-such-data: no such file"),
        (["train", "--task", "is-twelve", "--out", "{out}"], "unknown task"),
        (["train", "--metric", "cosine", "--out", "{out}"], "metric must be"),
        (["train", "--model", "majority", "--metric", "dot", "--out", "{out}"], "has no setting --metric"),
        (["data", "info", "{bad_npz}"], "missing key 'y_train'"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 4, 4), np.uint8))
    argv = [a.format(out=tmp_path / "out", bad_npz=bad) for a in argv]
    assert main(argv) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_usage_errors_exit_2(capsys) -> None:
    assert main(["train"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err


def test_version_and_help(capsys) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    helptext = capsys.readouterr().out
    assert "(default: mnist-sample)" in helptext
    assert "--metric" in helptext


def test_data_info_json(capsys) -> None:
    assert main(["data", "info", "digits", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_shape"] == [8, 8]
    assert info["dtype"] == "uint8"
    assert info["splits"]["train"]["count"] == 1000
    assert sum(info["splits"]["test"]["per_class"].values()) == 797
    assert info["source"] == "digits"


def test_data_info_table(capsys) -> None:
    assert main(["data", "info", "mnist-sample"]) == 0
    printed = capsys.readouterr().out
    assert "28x28 uint8" in printed
    assert "4000" in printed
    assert "1000" in printed


@pytest.mark.parametrize("fmt", ["npz", "idx", "png"])
def test_data_convert_round_trips(fmt, tmp_path, small_splits, capsys) -> None:
    source = tmp_path / "source.npz"
    formats.write_npz(source, small_splits)
    dest = tmp_path / ("out.npz" if fmt == "npz" else "out")
    assert main(["data", "convert", str(source), str(dest), "--format", fmt]) == 0
    from digitlab.data.sources import load

    back = load(dest)
    images, labels = small_splits["train"]
    # an image tree comes back grouped by label (stable within a label); the others in order
    order = np.argsort(labels, kind="stable") if fmt == "png" else np.arange(len(labels))
    np.testing.assert_array_equal(back.train_images, images[order])
    np.testing.assert_array_equal(back.train_labels, labels[order])
    assert sorted(back.test_labels.tolist()) == sorted(small_splits["test"][1].tolist())


def test_data_convert_refuses_to_overwrite(tmp_path, small_splits, capsys) -> None:
    source = tmp_path / "source.npz"
    formats.write_npz(source, small_splits)
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert main(["data", "convert", str(source), str(dest)]) == 2
    assert "already exists" in _one_error_line(capsys)
    assert (dest / "keep.txt").read_text() == "mine"


def test_installed_script_runs(tmp_path) -> None:
    script = shutil.which("digitlab")
    if script is None:
        pytest.fail("the digitlab console script is not installed (pip install -e .)")
    done = subprocess.run([script, "train", "--data", "digits", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "metrics.json").is_file()
    bad = subprocess.run([script, "data", "info", str(tmp_path / "nothing-here")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "no such file" in bad.stderr


def test_ctrl_c_keeps_the_model_so_far_and_writes_the_outputs(tmp_path) -> None:
    import signal
    import sys

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "digitlab.cli", "train", "--model", "perceptron",
            "--epochs", "100000", "--tol", "none", "--out", str(out)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:  # one line per epoch when stderr is not a terminal
            if line.startswith("epoch 2/"):
                break
        else:
            pytest.fail("training never reported an epoch")
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "interrupted" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert 2 <= len(metrics["history"]["accuracy"]) < 100000
    assert metrics["test"]["accuracy"] > 0.8
    assert (out / "report.html").is_file()
    from digitlab.io import load_model

    model, info = load_model(out / "model.safetensors")
    assert info.kind == "perceptron"
    assert model.predict(np.zeros((1, 784), np.float32)).shape == (1,)


def test_predict_table_names_classes_by_label_and_prints_names_as_they_are(
        tmp_path, capsys, monkeypatch) -> None:
    from PIL import Image

    monkeypatch.setenv("COLUMNS", "400")  # each row on one line, whatever tmp_path's length

    rng = np.random.default_rng(0)
    threes, fives = np.zeros((20, 8, 8), np.uint8), np.zeros((20, 8, 8), np.uint8)
    threes[:, :, :4], fives[:, :, 4:] = 255, 255  # ink on the left: 3; on the right: 5
    images = np.concatenate([threes, fives])
    images[rng.random(images.shape) < 0.05] ^= 255
    labels = np.repeat(np.array([3, 5], np.int64), 20)
    data = tmp_path / "d.npz"
    formats.write_npz(data, {"train": (images, labels), "test": (images, labels)})
    assert main(["train", "--data", str(data), "--model", "softmax", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    picture = tmp_path / "[bold]oops[red].png"  # markup-like names are file names too
    Image.fromarray(threes[0]).save(picture)
    model = str(tmp_path / "run" / "model.safetensors")
    assert main(["predict", model, str(picture), "--raw"]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if "oops" in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert "[bold]oops[red].png" in row  # not read as markup
    assert cells[2] == "3"  # the label
    assert cells[4].startswith("5 ")  # next best: the other class by its label, not position 1



def test_train_freezes_the_imports_only_as_the_command(tmp_path, monkeypatch) -> None:
    """The installed command exempts its imports from garbage collection (gc.freeze);
    main() called by a program (this test suite) leaves the caller's collector alone."""
    import gc

    from digitlab import cli

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    argv = ["train", "--model", "majority", "--quiet", "--out"]
    assert cli.main([*argv, str(tmp_path / "library")]) == 0
    assert frozen == []
    monkeypatch.setattr(cli, "_OWN_PROCESS", True)
    assert cli.main([*argv, str(tmp_path / "command")]) == 0
    # once as each stage begins (loading, training, evaluating, writing): the run
    # imports scikit-learn before training and torch in a CNN's fit
    assert frozen == [True] * 4
