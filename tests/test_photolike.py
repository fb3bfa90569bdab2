"""Photo-like digits (digitlab.data.photolike) and finding their ink (digitlab.data.ink)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from digitlab.cli import main
from digitlab.data import ink
from digitlab.data.dataset import Dataset
from digitlab.data.photolike import KINDS, photo_like, photo_like_set
from digitlab.data.preprocess import load_user_image, normalise_digit

N_PER_KIND = 30

# Median correlation of a photo's normalised 28x28 with the clean digit's, per kind
# (measured 0.95-0.98, lower where the picture changes the digit's own shape: a marker's
# wide strokes, a shear); and the share of pictures that must correlate above 0.7.
MIN_MEDIAN = {"marker": 0.8, "shear-blur": 0.6}
MIN_SHARE = {"shear-blur": 0.3}


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of images of two stacks (n, 28, 28)."""
    a = a.reshape(len(a), -1).astype(float)
    b = b.reshape(len(b), -1).astype(float)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1) + 1e-12)


@pytest.fixture(scope="module")
def digits(sample: Dataset) -> np.ndarray:
    return sample.test_images[:N_PER_KIND]


@pytest.fixture(scope="module")
def clean(digits: np.ndarray) -> np.ndarray:
    return np.stack([normalise_digit(d) for d in digits])


@pytest.mark.parametrize("kind", KINDS)
def test_pictures_are_rgb_photos_of_realistic_size(digits: np.ndarray, kind: str) -> None:
    picture = photo_like(digits[0], kind, rng=1)
    assert picture.dtype == np.uint8
    assert picture.ndim == 3
    assert picture.shape[2] == 3
    assert 200 <= min(picture.shape[:2])
    assert max(picture.shape[:2]) <= 640
    # Light paper around the digit: the border is bright, and some ink is dark.
    assert np.median(picture[0]) > 120
    assert picture.min() < 120


def test_same_seed_same_pictures(digits: np.ndarray) -> None:
    first = photo_like_set(digits[:3], "ruled-blue", rng=5)
    again = photo_like_set(digits[:3], "ruled-blue", rng=5)
    other = photo_like_set(digits[:3], "ruled-blue", rng=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_bad_kind_or_digit_is_refused(digits: np.ndarray) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        photo_like(digits[0], "watercolour")
    with pytest.raises(ValueError, match="uint8"):
        photo_like(digits[0].astype(float), "plain")


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_normalises_like_the_clean_digit(digits: np.ndarray, clean: np.ndarray, kind: str) -> None:
    photos = photo_like_set(digits, kind, rng=KINDS.index(kind))
    seen = np.stack([normalise_digit(photo) for photo in photos])
    r = correlations(seen, clean)
    assert np.median(r) >= MIN_MEDIAN.get(kind, 0.9), kind
    assert np.mean(r > 0.7) >= MIN_SHARE.get(kind, 0.9), kind


@pytest.mark.parametrize("kind", ["ruled-blue", "squared-red", "shadow"])
def test_without_clean_paper_these_kinds_fail(digits: np.ndarray, clean: np.ndarray, kind: str) -> None:
    # The test above is only worth something if the kinds it protects were broken before.
    photos = photo_like_set(digits, kind, rng=KINDS.index(kind))
    with mock.patch.object(ink, "clean_paper", lambda grey: grey):
        seen = []
        for photo in photos:
            try:
                seen.append(normalise_digit(photo))
            except ValueError:  # DataError: the shadow taken for the digit, nothing left
                seen.append(np.zeros((28, 28), np.uint8))
    r = np.nan_to_num(correlations(np.stack(seen), clean))
    assert np.mean(r > 0.7) < 0.85


def test_clean_drawings_are_left_alone(digits: np.ndarray) -> None:
    mnist = digits[0].astype(np.float32)  # 28x28, white on black
    assert ink.clean_paper(mnist) is mnist
    canvas = np.zeros((280, 280), np.float32)  # the web page: white strokes on black
    canvas[40:240, 130:150] = 255.0
    canvas[40:60, 60:220] = 255.0
    assert ink.clean_paper(canvas) is canvas


def test_a_stroke_across_the_picture_is_not_a_printed_line() -> None:
    # A tightly cropped 7: its bar runs across the whole picture, but alone.
    page = np.full((200, 160), 240.0, np.float32)
    page[10:30, :] = 30.0
    page[30:200, 120:140] = 30.0
    assert ink.without_printed_lines(page) is page


def test_ruled_lines_are_lightened_and_strokes_crossing_them_kept() -> None:
    page = np.full((200, 200), 240.0, np.float32)
    page[20::40, :] = 180.0  # five thin printed lines across the page
    page[30:170, 95:105] = 30.0  # a written stroke crossing three of them
    out = ink.without_printed_lines(page)
    assert out[20::40, :60].min() >= 239.0  # the lines are paper again (or a shade lighter)
    assert out[25:55, :60].max() == 240.0  # and the paper between them untouched
    assert out[30:170, 95:105].max() < 100.0  # the stroke is still ink where it crosses them


def test_shadow_edge_is_evened_out() -> None:
    page = np.full((200, 200), 240.0, np.float32)
    page[:, 100:] = 120.0  # a hard shadow over the right half
    page[50:150, 40:50] = 20.0  # a stroke in the light
    out = ink.even_lighting(page)
    # One paper level either side of the edge (but for the 5-px smoothing across the edge itself).
    assert np.abs(out[:, 60:97] - out[0, 0]).max() < 3.0
    assert np.abs(out[:, 103:] - out[0, 0]).max() < 3.0
    assert page[0, 150] < 200  # ... where the picture was dark
    assert out[50:150, 40:50].max() < 40.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", "mnist-sample", "--metric", "euclidean", "--out", str(out),
                 "--quiet"]) == 0
    return out / "model.safetensors"


def test_predict_shows_the_image_the_model_saw(trained: Path, digits: np.ndarray, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "notebook.png"
    Image.fromarray(photo_like(digits[0], "ruled-blue", rng=3)).save(photo)
    shown = tmp_path / "seen"
    assert main(["predict", str(trained), str(photo), "--show-input", str(shown)]) == 0
    assert "images the model saw" in capsys.readouterr().out
    seen = np.asarray(Image.open(shown / "notebook.input.png"))
    assert seen.dtype == np.uint8
    assert seen.shape == (28, 28)
    assert np.array_equal(seen, normalise_digit(load_user_image(photo)))


def test_show_input_at_a_file_is_one_line_exit_2(trained: Path, digits: np.ndarray, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "digit.png"
    Image.fromarray(digits[0]).save(picture)
    taken = tmp_path / "taken.txt"
    taken.write_text("mine", encoding="utf-8")
    assert main(["predict", str(trained), str(picture), "--show-input", str(taken)]) == 2
    captured = capsys.readouterr()
    assert "not a folder" in captured.err
    assert captured.err.strip().count("\n") == 0
    assert taken.read_text(encoding="utf-8") == "mine"
