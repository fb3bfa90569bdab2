"""`digitlab predict` on pictures made from real digits: photos work after normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from digitlab.cli import main

N = 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", "mnist-sample", "--metric", "euclidean", "--out", str(out),
                 "--quiet"]) == 0
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def pictures(sample, tmp_path_factory):
    """The first N test digits three ways: raw PNGs, "photos" and naively shrunk photos."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for kind in ("raw", "photo", "shrunk"):
        (root / kind).mkdir()
    for i in range(N):
        digit = sample.test_images[i]
        Image.fromarray(digit).save(root / "raw" / f"{i:03d}.png")
        # dark ink on white paper, scaled 12x, off-centre on a larger page, saved as JPEG
        page = Image.new("L", (520, 440), 255)
        big = Image.fromarray(255 - digit).resize((336, 336), Image.Resampling.BICUBIC)
        page.paste(big, (int(rng.integers(0, 180)), int(rng.integers(0, 100))))
        page.save(root / "photo" / f"{i:03d}.jpg", quality=85)
        page.resize((28, 28), Image.Resampling.LANCZOS).save(root / "shrunk" / f"{i:03d}.png")
    return root


def _accuracy(capsys, argv, labels) -> float:
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == len(labels)
    for result in results:
        assert len(result["probabilities"]) == 10
        assert sum(result["probabilities"]) == pytest.approx(1.0)
    return float(np.mean([r["label"] for r in results] == labels))


def test_photos_read_as_well_as_raw_digits(trained, pictures, sample, capsys) -> None:
    labels = sample.test_labels[:N]
    raw = _accuracy(capsys, ["predict", str(trained), str(pictures / "raw"), "--raw", "--json"], labels)
    photo = _accuracy(capsys, ["predict", str(trained), str(pictures / "photo"), "--json"], labels)
    naive = _accuracy(capsys, ["predict", str(trained), str(pictures / "shrunk"), "--raw", "--json"],
                      labels)
    assert raw > 0.7
    assert abs(photo - raw) <= 0.03 + 1e-9  # normalisation recovers the dataset's form
    assert naive < 0.3  # without it, a photo is unreadable


def test_predict_table_and_paths(trained, pictures, capsys) -> None:
    assert main(["predict", str(trained), str(pictures / "photo" / "000.jpg")]) == 0
    printed = capsys.readouterr().out
    assert "000.jpg" in printed
    assert "probability" in printed


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nothing.png", "no such file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
        (lambda p: (p / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nxx") and p / "bad.png", "bad.png"),
        (lambda p: Image.new("L", (5, 5), 0).save(p / "blank.png") or p / "blank.png", "blank"),
    ],
)
def test_bad_pictures_are_one_line_exit_2(trained, tmp_path, capsys, make, message) -> None:
    target = make(tmp_path)
    assert main(["predict", str(trained), str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err
    assert err.strip().count("\n") == 0


def test_raw_refuses_the_wrong_size(trained, pictures, capsys) -> None:
    assert main(["predict", str(trained), str(pictures / "photo" / "000.jpg"), "--raw"]) == 2
    assert "the model takes 28x28" in capsys.readouterr().err
