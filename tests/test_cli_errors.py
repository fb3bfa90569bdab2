"""Every mistake a user can make is one line and exit code 2: usage, output places, data
that cannot train a classifier, classes a model never saw, odd file names, OS errors."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab import cli
from digitlab.cli import main
from digitlab.data import formats


def _stderr_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return [line for line in captured.err.splitlines() if line.strip()]


def _one_error_line(capsys) -> str:
    lines = _stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("digitlab: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "the following arguments are required: --out (see 'digitlab train --help')"),
        (["trian"], "invalid choice: 'trian'"),
        (["train", "--out", "x", "--seed", "many"], "argument --seed: invalid int value: 'many'"),
        (["train", "--out", "x", "--image-size", "13"], "argument --image-size: invalid choice"),
        (["data"], "(see 'digitlab data --help')"),
        ([], "(see 'digitlab --help')"),
    ],
)
def test_usage_errors_are_one_line_with_a_hint(argv, message, capsys) -> None:
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert message in line
    assert "usage:" not in line


def _npz(path: Path, train_labels: list[int], test_labels: list[int]) -> Path:
    rng = np.random.default_rng(0)
    formats.write_npz(path, {
        "train": (rng.integers(0, 256, (len(train_labels), 8, 8), dtype=np.uint8),
                  np.array(train_labels, np.int64)),
        "test": (rng.integers(0, 256, (len(test_labels), 8, 8), dtype=np.uint8),
                 np.array(test_labels, np.int64)),
    })
    return path


@pytest.mark.parametrize("model", ["majority", "template", "softmax", "mlp", "perceptron", "cnn"])
def test_training_on_one_class_is_refused_before_any_work(model, tmp_path, capsys) -> None:
    data = _npz(tmp_path / "threes.npz", [3] * 30, [3] * 10)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", model, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "threes.npz: the train split holds one class only (30 images of '3')" in line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [data]


def test_a_test_class_missing_from_training_is_one_warning_with_counts(tmp_path, capsys) -> None:
    data = _npz(tmp_path / "d.npz", [0, 1] * 20, [0, 1, 2, 2, 2])
    assert main(["train", "--data", str(data), "--model", "template", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    lines = _stderr_lines(capsys)
    assert lines == ["digitlab: warning: " + str(data) + ": 3 test images have a class that the train "
                     "split lacks, so no model trained on it can predict them (3 of '2')"]


def test_evaluate_warns_of_classes_the_model_never_saw_and_refuses_when_all_are(
        tmp_path, capsys) -> None:
    known = _npz(tmp_path / "known.npz", [0, 1] * 20, [0, 1] * 5)
    assert main(["train", "--data", str(known), "--model", "template", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    model = str(tmp_path / "run" / "model.safetensors")
    partly = _npz(tmp_path / "partly.npz", [0, 1] * 5, [0, 1, 7, 7])
    assert main(["evaluate", model, "--data", str(partly), "--json"]) == 0
    lines = _stderr_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("digitlab: warning: ")
    assert "2 test images have a class that the model never saw in training (2 of '7')" in lines[0]
    unknown = _npz(tmp_path / "unknown.npz", [0, 1] * 5, [5, 6, 6])
    assert main(["evaluate", model, "--data", str(unknown)]) == 2
    assert "no test image has a class the model knows (1 of '5', 2 of '6')" in \
        _one_error_line(capsys)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{file}", "exists and is not a folder"),
        ("{file}/run", "taken.txt/run: cannot be written: "),
        ("/proc/digitlab-run", "/proc/digitlab-run: cannot be written: no new entries in /proc"),
    ],
)
@pytest.mark.parametrize("command", ["train", "inspect", "convert"])
def test_output_places_are_checked_before_the_data_is_even_read(
        command, out, message, tmp_path, capsys) -> None:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("mine")
    out = out.format(file=a_file)
    missing = str(tmp_path / "no-such-data")  # would be an error too, but later
    argv = {"train": ["train", "--data", missing, "--out", out],
            "inspect": ["inspect", str(tmp_path / "no-model.safetensors"), "--out", out],
            "convert": ["data", "convert", missing, out]}[command]
    assert main(argv) == 2
    assert message in _one_error_line(capsys)
    assert a_file.read_text() == "mine"


def _file_size_limit(limit: int):
    def limit_file_size() -> None:
        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (as on a
        # full disk) instead of killing the process.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


@pytest.mark.parametrize(("argv", "limit"), [
    (["train", "--data", "digits", "--out", "{dest}"], 100_000),  # the model fits, the report not
    (["data", "convert", "mnist-sample", "{dest}", "--format", "png"], 100),  # a PNG each
    (["data", "convert", "mnist-sample", "{dest}.npz"], 100_000),
])
def test_a_full_disk_is_one_line_and_leaves_nothing(argv, limit, tmp_path) -> None:
    parent = tmp_path / "out"
    parent.mkdir()
    argv = [a.format(dest=parent / "result") for a in argv]
    done = subprocess.run([sys.executable, "-m", "digitlab.cli", *argv], capture_output=True,
                          text=True, preexec_fn=_file_size_limit(limit), timeout=600, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "cannot write (File too large)" in lines[0]
    assert str(parent / "result") in lines[0]  # the user's path, not a temporary name
    assert list(parent.iterdir()) == []


def test_a_rerun_replaces_its_own_files_and_keeps_the_users(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["train", "--data", "digits", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main([*argv[:-1], "--model", "majority", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == "majority" != first["model"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.rglob(".*")]


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "two\nlines.npz"
    bad.write_bytes(b"not a zip")
    assert main(["data", "info", str(bad)]) == 2
    line = _one_error_line(capsys)
    assert "two\\nlines.npz" in line


def test_names_are_printed_as_they_are_not_as_emoji_codes(tmp_path, capsys) -> None:
    bad = tmp_path / ":smile:.npz"
    bad.write_bytes(b"not a zip")
    assert main(["data", "info", str(bad)]) == 2
    assert ":smile:.npz" in _one_error_line(capsys)


def test_an_os_error_is_one_line_naming_the_file(monkeypatch, capsys) -> None:
    def fail(*_args):
        raise PermissionError(13, "Permission denied", "/data/locked.csv")

    monkeypatch.setattr(cli, "_cmd_data_info", fail)
    assert main(["data", "info", "whatever"]) == 2
    assert _one_error_line(capsys) == "digitlab: error: /data/locked.csv: Permission denied"


def test_a_diverging_run_is_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "perceptron", "--lr", "1e300",
                 "--out", str(out), "--quiet"]) == 2
    assert "training diverged" in _one_error_line(capsys)
    assert not out.exists()


def test_a_model_its_file_could_not_hold_is_refused_before_saving(sample) -> None:
    from digitlab.errors import SettingsError
    from digitlab.models import Softmax
    from digitlab.run import check_saveable

    model = Softmax(epochs=1, random_state=0).fit(sample.features("train")[:200], sample.train_labels[:200])
    check_saveable(model)
    name = next(n for n in model._state_names if n != "classes_")
    getattr(model, name).flat[0] = np.nan
    with pytest.raises(SettingsError, match=f"training diverged \\({name} holds NaN"):
        check_saveable(model)


def test_running_out_of_memory_is_one_line(monkeypatch, capsys) -> None:
    def exhaust(*_args):
        raise MemoryError

    monkeypatch.setattr(cli, "_cmd_data_info", exhaust)
    assert main(["data", "info", "whatever"]) == 2
    assert "out of memory" in _one_error_line(capsys)
