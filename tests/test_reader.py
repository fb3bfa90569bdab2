"""Reading digits from Python (`digitlab.load_model`, `read_digits`), as `digitlab predict` does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import digitlab
from digitlab.cli import main
from digitlab.errors import DataError, DataWarning
from digitlab.io import save_model
from digitlab.models import Template
from digitlab.predict import Prediction

N = 60


@pytest.fixture(scope="module")
def model_path(sample, tmp_path_factory):
    path = tmp_path_factory.mktemp("reader") / "model.safetensors"
    model = Template(metric="euclidean").fit(sample.features("train"), sample.train_labels)
    save_model(path, model, input_shape=sample.image_shape, class_names=sample.class_names)
    return path


@pytest.fixture(scope="module")
def reader(model_path):
    return digitlab.load_model(model_path)


def _photos(sample) -> np.ndarray:
    """The first N test digits as dark ink on white paper, 5x larger, off-centre: (N, 160, 180)."""
    pages = np.full((N, 160, 180), 255, np.uint8)
    for i, digit in enumerate(sample.test_images[:N]):
        big = np.asarray(Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BICUBIC))
        top, left = i % 20, (3 * i) % 40
        pages[i, top:top + 140, left:left + 140] = big
    return pages


def test_import_digitlab_stays_light() -> None:
    code = ("import sys, digitlab; heavy = [m for m in ('torch', 'sklearn', 'scipy', 'safetensors') "
            "if m in sys.modules]; print(heavy); digitlab.load_model; print('sklearn' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert lines == ["[]", "True"]  # lazily imported on first use, not before


def test_load_model_gives_a_reader_that_knows_its_model(reader, sample) -> None:
    assert isinstance(reader, digitlab.Reader)
    assert isinstance(reader.model, Template)
    np.testing.assert_array_equal(reader.classes_, np.arange(10))
    assert reader.class_names == list(sample.class_names)
    assert reader.info.input_shape == [28, 28]
    assert repr(reader) == f"Reader(template, classes {list(sample.class_names)}, input 28x28)"


def test_arrays_of_any_size_and_polarity_read_as_predict_reads_files(
        reader, model_path, sample, tmp_path, capsys) -> None:
    photos = _photos(sample)
    for i, page in enumerate(photos[:5]):
        Image.fromarray(page).save(tmp_path / f"{i}.png")
    assert main(["predict", str(model_path), str(tmp_path), "--json"]) == 0
    from_files = json.loads(capsys.readouterr().out)
    from_arrays = reader.read(photos[:5])
    assert [p.label for p in from_arrays] == [p["label"] for p in from_files]
    for array, file in zip(from_arrays, from_files, strict=True):
        np.testing.assert_allclose(array.probabilities, file["probabilities"], rtol=1e-6)
    # and they read as well as the raw digits the model was trained on
    labels = sample.test_labels[:N]
    raw = np.mean(reader.predict(sample.test_images[:N], raw=True) == labels)
    photo = np.mean(reader.predict(photos) == labels)
    assert raw > 0.7
    assert abs(photo - raw) <= 0.05


def test_every_kind_of_input_and_its_name(reader, sample, tmp_path) -> None:
    digits = sample.test_images[:3]
    Image.fromarray(digits[0]).save(tmp_path / "a.png")
    (tmp_path / "folder").mkdir()
    Image.fromarray(digits[1]).save(tmp_path / "folder" / "b.png")
    expected = reader.predict(digits)
    one = reader.read(digits[0])
    assert len(one) == 1
    assert isinstance(one[0], Prediction)
    assert one[0].path == "input"
    assert one[0].image.dtype == np.uint8
    assert one[0].image.shape == (28, 28)
    assert sum(one[0].probabilities) == pytest.approx(1.0)
    assert [p.path for p in reader.read(digits)] == ["inputs[0]", "inputs[1]", "inputs[2]"]
    mixed = reader.read([str(tmp_path / "a.png"), tmp_path / "folder", digits[2],
                         Image.fromarray(digits[0]), digits[1:3]])
    assert [p.path for p in mixed] == [str(tmp_path / "a.png"), str(tmp_path / "folder" / "b.png"),
                                       "inputs[2]", "inputs[3]", "inputs[4][0]", "inputs[4][1]"]
    assert [p.label for p in mixed] == [*expected, expected[0], *expected[1:]]
    np.testing.assert_array_equal(reader.predict(digits.astype(np.int64)), expected)
    np.testing.assert_array_equal(reader.predict(digits > 127), reader.predict((digits > 127) * 255))
    proba = reader.predict_proba(list(digits))
    assert proba.shape == (3, 10)
    np.testing.assert_array_equal(reader.classes_[proba.argmax(axis=1)], expected)
    assert reader.read([]) == []


def test_read_digits_loads_once_or_takes_a_reader(reader, model_path, sample) -> None:
    digits = sample.test_images[:4]
    by_path = digitlab.read_digits(model_path, digits)
    by_reader = digitlab.read_digits(reader, digits)
    assert [p.label for p in by_path] == [p.label for p in by_reader] == list(reader.predict(digits))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((28, 28)) + 0.5, r"inputs: pixels must be uint8 0..255, got float64 \(features in"),
        (np.full((2, 28, 28), 300, np.int64), r"pixels must lie in 0..255, got 300..300"),
        (np.zeros((40, 50, 3), np.uint8), r"looks like a colour image"),
        (np.zeros((2, 2, 28, 28), np.uint8), r"expected a greyscale image \(h, w\) or a stack"),
        ([np.zeros((28, 28), np.float32)], r"inputs\[0\]: pixels must be uint8"),
    ],
)
def test_arrays_it_cannot_read_are_refused_by_name(reader, inputs, message) -> None:
    with pytest.raises(DataError, match=message):
        reader.read(inputs)


def test_not_a_picture_is_a_type_error(reader) -> None:
    with pytest.raises(TypeError, match=r"inputs\[1\]: expected a path"):
        reader.read([np.zeros((28, 28), np.uint8), 3.5])
    with pytest.raises(TypeError, match="inputs must be"):
        reader.read(7)


def test_blank_arrays_stop_or_are_skipped(reader, sample) -> None:
    batch = np.stack([sample.test_images[0], np.zeros((28, 28), np.uint8), sample.test_images[1]])
    with pytest.raises(DataError, match=r"inputs\[1\]: no digit found"):
        reader.read(batch)
    with pytest.warns(DataWarning, match=r"skipped inputs\[1\]: no digit found"):
        kept = reader.read(batch, on_error="skip")
    assert [p.path for p in kept] == ["inputs[0]", "inputs[2]"]
    assert [p.label for p in kept] == list(reader.predict(batch[[0, 2]]))


# ---------------------------------------------------------------- features the models take


def test_pixels_0_to_255_are_said_with_the_fix(reader, sample) -> None:
    X = sample.features("test")[:50]
    with pytest.warns(DataWarning, match=r"features should lie in \[0, 1\] \(pixel / 255\); got max "
                                         r"255 - divide uint8 images by 255"):
        scored = reader.model.score(X * 255, sample.test_labels[:50])
    assert scored < reader.model.score(X, sample.test_labels[:50])  # why it is worth saying
    with pytest.warns(DataWarning, match=r"got min -0.5"):
        reader.model.predict(X - 0.5)


def test_dark_ink_on_light_paper_is_warned_about(reader, sample) -> None:
    X, y = sample.features("test")[:200], sample.test_labels[:200]
    with pytest.warns(DataWarning, match=r"looks like dark ink on light paper; digitlab models "
                                         r"take light ink on dark: use 1 - X or read_digits"):
        inverted = reader.model.score(1 - X, y)
    assert inverted < 0.5 < reader.model.score(X, y)  # why it is worth a warning
    with pytest.warns(DataWarning, match="light background"):
        dark_ink = Template(metric="euclidean").fit(1 - X, y)
    assert dark_ink.light_background_
    assert dark_ink.score(1 - X, y) > 0.5  # fitted on such features: said once, at fit
    assert not Template(metric="euclidean").fit(X, y).light_background_


def test_features_outside_the_range_only_where_asked(sample) -> None:
    from digitlab.models.base import features_outside_unit_range

    X, y = sample.features("train")[:100] * 255, sample.train_labels[:100]
    with features_outside_unit_range():
        Template().fit(X, y)
    with pytest.warns(DataWarning, match="divide uint8 images by 255"):
        Template().fit(X, y)
