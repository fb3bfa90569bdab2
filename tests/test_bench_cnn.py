"""benchmarks/bench_cnn.py's full MNIST rows (issue 17), on a tiny IDX folder and one epoch."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("torch")

from digitlab.data.formats import write_idx_folder
from digitlab.models.cnn import CNN
from script_modules import ROOT, load_script


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The script imports its sibling _results as a script would: benchmarks/ on sys.path.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = load_script("benchmarks/bench_cnn.py")
    # One epoch for every model: the test checks the rows, not the accuracy.
    monkeypatch.setattr(module, "CNN", functools.partial(CNN, epochs=1))
    monkeypatch.setattr(module, "MNIST_LONGER", {"epochs": 1, "width": 4})
    reference = module.reference
    monkeypatch.setattr(module, "reference",
                        lambda *a, **k: reference(*a, **{**k, "epochs": 1}))
    return module


def rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line.removeprefix("RESULT ")) for line in text.splitlines()
            if line.startswith("RESULT ")]


@pytest.fixture
def idx_folder(sample, tmp_path: Path) -> Path:
    folder = tmp_path / "mnist"
    write_idx_folder(folder, {"train": (sample.train_images[:128], sample.train_labels[:128]),
                              "test": (sample.test_images[:32], sample.test_labels[:32])})
    return folder


def test_full_mnist_rows_without_the_reference(bench, idx_folder, capsys) -> None:
    bench.full_mnist(str(idx_folder), seed=0, with_reference=False)
    found = rows(capsys.readouterr().out)
    assert [row["name"] for row in found] == [
        "cnn full mnist, defaults (accuracy)",
        "cnn full mnist, longer setting {'epochs': 1, 'width': 4} (accuracy)",
    ]
    for row in found:
        assert 0 <= row["digitlab"] <= 1
        assert np.isnan(row["reference"])  # no reference trained: NaN, shown as "-"
        assert row["met"] is False  # one epoch on 128 images is far from 99.4%


def test_full_mnist_rows_with_the_reference(bench, idx_folder, capsys) -> None:
    bench.full_mnist(str(idx_folder), seed=0, with_reference=True)
    found = rows(capsys.readouterr().out)
    assert len(found) == 2
    for row in found:
        assert 0 <= row["reference"] <= 1
        assert row["ratio"] == pytest.approx(row["digitlab"] / row["reference"])


def test_mnist_flags_need_a_folder(bench, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_cnn.py", "--only-mnist"])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    assert stopped.value.code == 2
    assert "need --mnist DIR" in capsys.readouterr().err
