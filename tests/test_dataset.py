"""Dataset: contract dtypes, features, hold-out, range, classes and tasks."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.data.dataset import Dataset, stratified_holdout
from digitlab.data.formats import MAX_LABEL
from digitlab.errors import DataError, SettingsError


def test_sample_follows_the_contract(sample: Dataset) -> None:
    assert sample.train_images.dtype == np.uint8
    assert sample.train_images.shape == (4000, 28, 28)
    assert sample.test_images.shape == (1000, 28, 28)
    assert sample.train_labels.dtype == np.int64
    assert sample.image_shape == (28, 28)
    assert sample.counts("train") == dict.fromkeys(range(10), 400)
    assert sample.counts("test") == dict.fromkeys(range(10), 100)
    assert sample.train_images.max() == 255  # ink is 255, background 0
    assert np.median(sample.train_images) == 0


def test_features_are_float32_in_unit_range(sample: Dataset) -> None:
    features = sample.features("test")
    assert features.dtype == np.float32
    assert features.shape == (1000, 784)
    assert features.min() == 0.0
    assert features.max() == 1.0
    np.testing.assert_allclose(features[3].reshape(28, 28) * 255, sample.test_images[3], atol=1e-4)


def test_unknown_split_is_refused(sample: Dataset) -> None:
    with pytest.raises(ValueError, match="split"):
        sample.features("dev")


def test_validation_split_is_empty_until_carved(sample: Dataset) -> None:
    assert sample.splits == ("train", "test")
    assert sample.features("validation").shape == (0, 784)
    assert sample.labels("validation").shape == (0,)


def test_with_validation_carves_a_stratified_seeded_share_of_train(sample: Dataset) -> None:
    carved = sample.with_validation(0.1, seed=3)
    assert carved.splits == ("train", "validation", "test")
    assert len(carved.validation_labels) == 400
    assert len(carved.train_labels) == 3600
    assert carved.counts("validation") == {digit: 40 for digit in range(10)}
    np.testing.assert_array_equal(carved.test_images, sample.test_images)  # test untouched
    # train and validation partition the original train images
    together = np.concatenate([carved.train_images, carved.validation_images]).reshape(4000, -1)
    assert len(np.unique(together, axis=0)) == len(np.unique(sample.train_images.reshape(4000, -1), axis=0))
    again = sample.with_validation(0.1, seed=3)
    np.testing.assert_array_equal(again.validation_labels, carved.validation_labels)
    np.testing.assert_array_equal(again.validation_images, carved.validation_images)
    other = sample.with_validation(0.1, seed=4)
    assert not np.array_equal(other.validation_images, carved.validation_images)
    assert sample.with_validation(0.0, seed=3) is sample
    with pytest.raises(ValueError, match="already"):
        carved.with_validation(0.1, seed=3)


def test_derived_datasets_carry_the_validation_split(sample: Dataset) -> None:
    carved = sample.with_validation(0.2, seed=0)
    task = carved.for_task("0-vs-1")
    assert set(task.counts("validation")) == {0, 1}
    assert task.counts("validation")[1] == carved.counts("validation")[1]
    resized = carved.map_images(lambda images: images[:, ::2, ::2], "halved")
    assert resized.validation_images.shape[1:] == (14, 14)
    assert sample.map_images(lambda images: images[:, ::2, ::2], "halved").validation_images.shape == (0, 14, 14)
    assert "validation" in carved.summary()["splits"]  # type: ignore[operator]


def test_from_splits_holds_out_a_stratified_seeded_test_split(small_splits) -> None:
    splits = {"train": small_splits["train"]}
    a = Dataset.from_splits("x", splits, test_fraction=0.2, seed=3)
    b = Dataset.from_splits("x", splits, test_fraction=0.2, seed=3)
    c = Dataset.from_splits("x", splits, test_fraction=0.2, seed=4)
    assert len(a.train_labels) + len(a.test_labels) == 50
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.test_labels, c.test_labels) or not np.array_equal(
        a.test_images, c.test_images
    )
    assert any("held out" in note and "seed 3" in note for note in a.notes)
    # every class with two or more images gives at least one to the test split
    labels, counts = np.unique(splits["train"][1], return_counts=True)
    assert set(a.test_labels.tolist()) == set(labels[counts >= 2].tolist())


def test_stratified_holdout_keeps_class_proportions() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 20, 10])
    train, test = stratified_holdout(labels, 0.2, seed=0)
    assert np.bincount(labels[test]).tolist() == [20, 10, 4, 2]
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == len(labels)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_holdout_fraction_must_be_a_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_holdout(np.zeros(10, dtype=np.int64), fraction, seed=0)


def test_take_keeps_a_range_in_order(sample: Dataset) -> None:
    part = sample.take("train", 100, 50).take("test", 0, 10)
    np.testing.assert_array_equal(part.train_images, sample.train_images[100:150])
    np.testing.assert_array_equal(part.test_labels, sample.test_labels[:10])
    with pytest.raises(DataError, match="runs past"):
        sample.take("test", 990, 20)
    with pytest.raises(DataError, match="outside"):
        sample.take("test", 1000, 1)


def test_keep_classes(sample: Dataset) -> None:
    kept = sample.keep_classes([3, 5])
    assert set(kept.train_labels.tolist()) == {3, 5}
    assert kept.counts("test") == {3: 100, 5: 100}
    with pytest.raises(DataError, match="no train images"):
        sample.keep_classes([42])


def test_is_2_task_maps_two_against_the_rest(sample: Dataset) -> None:
    task = sample.for_task("is-2")
    assert task.class_names == ("not 2", "2")
    assert task.counts("test") == {0: 900, 1: 100}
    np.testing.assert_array_equal(task.test_labels, (sample.test_labels == 2).astype(np.int64))
    assert task.task == "is-2"


def test_a_vs_b_task_keeps_two_digits(sample: Dataset) -> None:
    zero_one = sample.for_task("0-vs-1")
    assert zero_one.counts("train") == {0: 400, 1: 400}
    three_five = sample.for_task("3-vs-5")
    assert three_five.class_names == ("3", "5")
    # 3 becomes 0 and 5 becomes 1
    original = sample.test_labels[np.isin(sample.test_labels, [3, 5])]
    np.testing.assert_array_equal(three_five.test_labels, (original == 5).astype(np.int64))


def test_bad_tasks(sample: Dataset) -> None:
    with pytest.raises(SettingsError, match="unknown task"):
        sample.for_task("is-two")
    with pytest.raises(SettingsError, match="must differ"):
        sample.for_task("3-vs-3")
    with pytest.raises(DataError, match="label 12"):
        sample.for_task("is-12")


def test_fingerprint_changes_with_the_data(sample: Dataset) -> None:
    assert sample.fingerprint() == sample.take("train", 0).fingerprint()
    assert sample.fingerprint() != sample.take("train", 1).fingerprint()


def test_contract_violations_are_refused(small_splits) -> None:
    images, labels = small_splits["train"]
    with pytest.raises(DataError, match="uint8"):
        Dataset("x", images.astype(np.float32), labels, images, labels)
    with pytest.raises(DataError, match="int64"):
        Dataset("x", images, labels.astype(np.int32), images, labels)
    with pytest.raises(DataError, match="differ in shape"):
        Dataset("x", images, labels, images[:, :20, :20], labels)


@pytest.mark.parametrize("label", [MAX_LABEL + 1, -1])
def test_labels_outside_the_class_range_are_refused(small_splits, label: int) -> None:
    images, labels = small_splits["train"]
    bad = labels.copy()
    bad[3] = label
    with pytest.raises(DataError, match=f"labels are class numbers 0..{MAX_LABEL}"):
        Dataset("x", images, bad, images, labels)


def test_a_label_of_four_billion_is_refused_before_naming_classes(limited_run) -> None:
    # Once, class_names became str(0) .. str(4e9): killed at 4 GB.
    [outcome] = limited_run(
        "import numpy as np; from digitlab.data.dataset import Dataset\n"
        "images = np.zeros((2, 4, 4), np.uint8)\n"
        "Dataset('x', images, np.array([0, 4_000_000_000]), images, np.array([0, 1]))"
    )
    assert outcome == "DataError: x: labels hold 1 value(s) too large for a class (the largest " \
        f"4000000000); labels are class numbers 0..{MAX_LABEL}"


def test_class_names_run_to_the_largest_label_present(small_splits) -> None:
    images, labels = small_splits["train"]
    sparse = np.where(labels == 9, MAX_LABEL, labels)
    data = Dataset("x", images, sparse, images, labels)
    assert len(data.class_names) == MAX_LABEL + 1  # indexed by label: class_names[label]
    assert data.class_names[MAX_LABEL] == str(MAX_LABEL)
    assert data.classes.tolist() == [*range(10), MAX_LABEL]  # the test split keeps its 9s


def test_map_images_refuses_what_is_not_a_function(sample: Dataset) -> None:
    with pytest.raises(TypeError, match="transform must be a function"):
        sample.map_images("resize", "note")  # type: ignore[arg-type]


def test_resized_resizes_every_split_and_says_so(sample) -> None:
    small = sample.with_validation(0.1, seed=0).resized(20)
    assert small.image_shape == (20, 20)
    for split in small.splits:
        assert small.images(split).shape[1:] == (20, 20)
        np.testing.assert_array_equal(small.labels(split), sample.with_validation(0.1, seed=0).labels(split))
    assert small.notes[-1] == "resized to 20x20"


def test_fingerprint_hashes_the_bytes_it_always_hashed(sample: Dataset) -> None:
    """Model files record this digest: hashing the arrays' buffers, not tobytes() copies,
    must keep it the same."""
    import hashlib

    digest = hashlib.sha256()
    for split in sample.splits:
        images = sample.images(split)
        digest.update(str(images.shape).encode())
        digest.update(images.tobytes())
        digest.update(sample.labels(split).tobytes())
    assert sample.fingerprint() == digest.hexdigest()
