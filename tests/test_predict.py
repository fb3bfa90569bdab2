"""`digitlab predict` on pictures made from real digits: photos work after normalisation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from digitlab.cli import main
from digitlab.data.imagetree import MAX_PIXELS
from digitlab.data.preprocess import load_user_image, to_greyscale
from digitlab.errors import DataError
from digitlab.predict import MAX_SIDE

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


def test_min_confidence_answers_unknown_in_json_and_text(trained, pictures, capsys) -> None:
    raw = pictures / "raw"
    assert main(["predict", str(trained), str(raw), "--raw", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    confidences = [max(r["probabilities"]) for r in plain]
    threshold = float(np.median(confidences))
    assert main(["predict", str(trained), str(raw), "--raw", "--json",
                 "--min-confidence", str(threshold)]) == 0
    gated = json.loads(capsys.readouterr().out)
    for before, after, confidence in zip(plain, gated, confidences, strict=True):
        assert after["probabilities"] == before["probabilities"]  # still shown
        expected = (None, "unknown") if confidence < threshold else (before["label"], before["name"])
        assert (after["label"], after["name"]) == expected
    assert any(r["label"] is None for r in gated)
    assert main(["predict", str(trained), str(raw / "000.png"), "--raw", "--min-confidence", "1"]) == 0
    assert "unknown" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "high"])
def test_min_confidence_out_of_range_is_one_line_exit_2(trained, pictures, capsys, value) -> None:
    assert main(["predict", str(trained), str(pictures / "raw"), f"--min-confidence={value}"]) == 2
    err = capsys.readouterr().err
    assert f"argument --min-confidence: expected a number from 0 to 1, got '{value}'" in err
    assert err.strip().count("\n") == 0


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


# ---------------------------------------------------------------- hostile pictures (issue 12)

_READ_AS_PREDICT_DOES = (
    "from digitlab.predict import MAX_SIDE, collect_images\n"
    "from digitlab.data.preprocess import load_user_image\n"
    "for path in collect_images([{path!r}]):\n"
    "    load_user_image(path, max_side=MAX_SIDE)"
)


def test_huge_or_endless_pictures_are_refused_unread(tmp_path, limited_run, zero_png) -> None:
    # A 9,400 x 9,400 RGBA PNG (0.3 MB) took 1.9 GB to decode; /dev/zero never ends.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(zero_png(9400, 9400))
    paths = [bomb]
    if Path("/dev/zero").exists():
        paths.append(tmp_path / "zero.png")
        paths[-1].symlink_to("/dev/zero")
    outcomes = limited_run(*(_READ_AS_PREDICT_DOES.format(path=str(p)) for p in paths))
    assert len(outcomes) == len(paths), outcomes
    assert outcomes[0].startswith("DataError:"), outcomes[0]
    assert f"bomb.png: refusing a 9400x9400 image: more than {MAX_PIXELS:,} pixels" in outcomes[0]
    if len(paths) > 1:
        assert outcomes[1].startswith("DataError:"), outcomes[1]
        assert "zero.png: is a character device, not a regular file" in outcomes[1]


def test_camera_photo_above_the_pixel_limit_decodes_smaller(tmp_path) -> None:
    # 20 megapixels, above MAX_PIXELS: halving breaks MAX_SIDE, yet the photo is read.
    path = tmp_path / "photo.jpg"
    Image.new("L", (5184, 3888), 250).save(path, "JPEG")
    assert load_user_image(path, max_side=MAX_SIDE).shape == (1944, 2592)
    with pytest.raises(DataError, match="refusing a 5184x3888 image"):
        load_user_image(path)  # in full, as --raw reads it


def test_named_pipe_among_pictures_is_refused(trained, tmp_path, capsys) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes")
    os.mkfifo(tmp_path / "a.png")  # once skipped in silence
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(tmp_path / "b.png")
    assert main(["predict", str(trained), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "a.png: is a named pipe (FIFO), not a regular file" in err
    assert err.strip().count("\n") == 0


def test_damaged_png_header_is_named(trained, tmp_path, capsys) -> None:
    path = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(path)
    data = bytearray(path.read_bytes())
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    path.write_bytes(bytes(data))
    assert main(["predict", str(trained), str(path)]) == 2
    assert "digit.png: damaged PNG: CRC mismatch in IHDR" in capsys.readouterr().err


def test_transparent_pictures_are_composited_in_bands_exactly() -> None:
    # Tall enough for several bands of rows: the same grey as one whole-image pass.
    rgba = np.random.default_rng(0).integers(0, 256, (700, 500, 4), dtype=np.uint8)
    pixels = rgba.astype(np.float32) / 255.0
    alpha = pixels[..., 3:]
    luma = (pixels[..., :3] * alpha + (1.0 - alpha)) @ np.array([0.299, 0.587, 0.114], np.float32)
    expected = np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(to_greyscale(Image.fromarray(rgba, "RGBA")), expected)


# ---------------------------------------------------------------- batches (issue 13)


@pytest.fixture
def four(sample, tmp_path):
    """Three digits and, second in sorted order, a blank picture."""
    folder = tmp_path / "four"
    folder.mkdir()
    for i, name in enumerate(["a.png", "c.png", "d.png"]):
        Image.fromarray(sample.test_images[i]).save(folder / name)
    Image.new("L", (28, 28), 0).save(folder / "b-blank.png")
    return folder


def _answers_alone(capsys, trained, folder, names) -> list[int]:
    labels = []
    for name in names:
        assert main(["predict", str(trained), str(folder / name), "--json"]) == 0
        labels.append(json.loads(capsys.readouterr().out)[0]["label"])
    return labels


def test_one_blank_picture_stops_the_batch_by_default(trained, four, capsys) -> None:
    assert main(["predict", str(trained), str(four), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"digitlab: error: {four / 'b-blank.png'}: no digit found: the image is blank\n"


def test_on_error_skip_answers_the_others_in_order(trained, four, capsys) -> None:
    alone = _answers_alone(capsys, trained, four, ["a.png", "c.png", "d.png"])
    assert main(["predict", str(trained), str(four), "--json", "--on-error", "skip"]) == 3
    captured = capsys.readouterr()
    answers = json.loads(captured.out)
    assert [Path(a["path"]).name for a in answers] == ["a.png", "c.png", "d.png"]
    assert [a["label"] for a in answers] == alone  # the gap left no answer beside its picture
    assert captured.err.splitlines() == [
        f"digitlab: skipped {four / 'b-blank.png'}: no digit found: the image is blank",
        "digitlab: skipped 1 of 4 files",
    ]


def test_on_error_skip_without_skips_exits_0(trained, four, capsys) -> None:
    (four / "b-blank.png").unlink()
    assert main(["predict", str(trained), str(four), "--on-error", "skip"]) == 0
    assert capsys.readouterr().err == ""


def test_on_error_skip_with_nothing_readable_is_exit_2_and_writes_nothing(
        trained, tmp_path, capsys) -> None:
    for name in ("x.png", "y.png"):
        Image.new("L", (30, 30), 255).save(tmp_path / name)
    out = tmp_path / "answers.csv"
    assert main(["predict", str(trained), str(tmp_path / "x.png"), str(tmp_path / "y.png"),
                 "--on-error", "skip", "--csv", "--output", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert err[2] == "digitlab: skipped 2 of 2 files"
    assert err[3] == "digitlab: error: none of the 2 pictures could be read"
    assert not out.exists()


def test_skipped_pictures_leave_the_rest_stackable(trained, sample, tmp_path, capsys) -> None:
    # --raw keeps each picture's size: a 20x20 one among 28x28 ones is refused, not stacked.
    Image.fromarray(sample.test_images[0]).save(tmp_path / "a.png")
    Image.fromarray(sample.test_images[1][4:24, 4:24]).save(tmp_path / "b.png")
    Image.fromarray(sample.test_images[2]).save(tmp_path / "c.png")
    assert main(["predict", str(trained), str(tmp_path), "--raw", "--json", "--on-error", "skip"]) == 3
    captured = capsys.readouterr()
    assert [Path(a["path"]).name for a in json.loads(captured.out)] == ["a.png", "c.png"]
    assert "b.png: image is 20x20, the model takes 28x28" in captured.err


def test_csv_has_a_column_per_class_and_agrees_with_json(trained, four, capsys) -> None:
    import csv
    import io

    (four / "b-blank.png").unlink()
    assert main(["predict", str(trained), str(four), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert main(["predict", str(trained), str(four), "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "label", "name", "confidence", *(f"p_{d}" for d in range(10))]
    assert len(rows) == 1 + len(answers)
    for row, answer in zip(rows[1:], answers, strict=True):
        assert row[0] == answer["path"]
        assert int(row[1]) == answer["label"]
        assert row[2] == answer["name"]
        probabilities = [float(p) for p in row[4:]]
        assert probabilities == answer["probabilities"]  # written in full, not rounded
        assert float(row[3]) == max(probabilities) == probabilities[answer["label"]]


def test_output_file_is_written_whole_instead_of_stdout(trained, four, tmp_path, capsys) -> None:
    (four / "b-blank.png").unlink()
    assert main(["predict", str(trained), str(four), "--csv"]) == 0
    expected = capsys.readouterr().out
    out = tmp_path / "new" / "answers.csv"
    for _ in range(2):  # a second run replaces the file
        assert main(["predict", str(trained), str(four), "--csv", "--output", str(out)]) == 0
        assert capsys.readouterr().out == ""
        assert out.read_text(encoding="utf-8") == expected
    assert [p.name for p in out.parent.iterdir()] == ["answers.csv"]  # no temporary left
    assert main(["predict", str(trained), str(four), "--json", "--output", str(out)]) == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "{tmp}/a.csv"], "--output needs --csv or --json"),
        (["--csv", "--output", "{tmp}"], "is a folder; name a file to write"),
        (["--csv", "--json"], "not allowed with argument"),
        (["--on-error", "ignore"], "invalid choice"),
    ],
)
def test_predict_output_mistakes_are_one_line_exit_2(trained, four, tmp_path, capsys,
                                                      extra, message) -> None:
    argv = ["predict", str(trained), str(four), *(a.format(tmp=tmp_path) for a in extra)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.strip().count("\n") == 0


def test_predict_images_on_error_in_python(trained, four) -> None:
    from digitlab.errors import DataWarning
    from digitlab.io import load_model
    from digitlab.predict import predict_images

    model, info = load_model(trained)
    with pytest.raises(DataError, match="blank"):
        predict_images(model, info, [four])
    with pytest.warns(DataWarning, match=r"skipped .*b-blank.png: no digit found"):
        skipped = predict_images(model, info, [four], on_error="skip")
    assert [Path(p.path).name for p in skipped] == ["a.png", "c.png", "d.png"]
    seen: list[DataError] = []
    assert len(predict_images(model, info, [four], on_error=seen.append)) == 3
    assert [Path(e.source).name for e in seen] == ["b-blank.png"]
    with pytest.raises(ValueError, match="on_error must be"):
        predict_images(model, info, [four], on_error="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize("stack", [4096, 4])
def test_a_folder_predicts_as_each_picture_alone(trained, pictures, sample, tmp_path,
                                                 monkeypatch, stack) -> None:
    """Small same-size pictures are normalised as stacks (4: several full stacks and a rest):
    every image the model sees is the one model_input makes of its file, errors in order."""
    import digitlab.predict as predict
    from digitlab.io import load_model

    monkeypatch.setattr(predict, "STACK", stack)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(sample.test_images[i]).save(folder / f"a{i:02d}.png")
        Image.fromarray(sample.test_images[i][4:24, 2:26]).save(folder / f"b{i:02d}.png")
    Image.new("L", (28, 28), 0).save(folder / "a05-blank.png")
    (folder / "a07-broken.png").write_bytes(b"not a picture")
    for name in ("000.jpg", "001.jpg"):
        (folder / name).write_bytes((pictures / "photo" / name).read_bytes())
    # 28x28 PNGs that are not plain grey, or whose chunks change their reading, beside
    # the plain ones (decoded as a batch without Pillow): each must read as alone.
    digit = Image.fromarray(sample.test_images[20])
    digit.convert("RGB").save(folder / "a20-rgb.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned a quarter
    digit.save(folder / "a21-exif.png", exif=exif)
    text = PngInfo()
    text.add_text("Raw profile type exif", "not a profile")
    digit.save(folder / "a22-text.png", pnginfo=text)
    digit.save(folder / "a23-dpi.png", dpi=(300, 300))  # pHYs: read as plain
    by_pillow: list[str] = []
    real_decode = predict.decode_user_image
    monkeypatch.setattr(predict, "decode_user_image",
                        lambda data, **kw: by_pillow.append(Path(kw["source"]).name) or real_decode(data, **kw))
    model, info = load_model(trained)
    seen: list[DataError] = []
    answers = predict.predict_images(model, info, [folder], on_error=seen.append)
    assert sorted(by_pillow) == ["000.jpg", "001.jpg", "a07-broken.png", "a20-rgb.png",
                                 "a21-exif.png", "a22-text.png"]
    files = predict.collect_images([folder])
    assert [Path(e.source).name for e in seen] == ["a05-blank.png", "a07-broken.png"]
    good = [path for path in files if path.name not in ("a05-blank.png", "a07-broken.png")]
    assert [a.path for a in answers] == [str(path) for path in good]
    for answer, path in zip(answers, good, strict=True):
        np.testing.assert_array_equal(answer.image, predict.model_input(path, info))
    turned = next(a.image for a in answers if a.path.endswith("a21-exif.png"))
    assert not np.array_equal(turned, next(a.image for a in answers if a.path.endswith("a23-dpi.png")))
    with pytest.raises(DataError, match=r"a05-blank\.png: no digit found"):
        predict.predict_images(model, info, [folder])
