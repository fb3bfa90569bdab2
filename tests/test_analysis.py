"""Analysis functions on tiny arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab import analysis


def test_pixel_ranking_reports_row_and_column() -> None:
    weights = np.zeros(28 * 28)
    weights[20 * 28 + 22] = 3.0
    weights[2 * 28 + 5] = -4.0
    weights[7 * 28 + 7] = 1.0
    ranking = analysis.pixel_ranking(weights, (28, 28), k=2)
    assert ranking["most_positive_pixel"] == [20, 22]
    assert ranking["most_negative_pixel"] == [2, 5]
    assert ranking["top_positive"][0] == {"index": 20 * 28 + 22, "row": 20, "col": 22, "weight": 3.0}
    assert ranking["top_positive"][1]["row"] == 7
    assert len(ranking["top_negative"]) == 2
    with pytest.raises(ValueError, match="do not fill"):
        analysis.pixel_ranking(weights[:-1], (28, 28))


def test_describe_pixel_ranking_names_the_pixels() -> None:
    weights = np.zeros(16)
    weights[6] = 1.0
    weights[9] = -1.0
    text = analysis.describe_pixel_ranking(analysis.pixel_ranking(weights, (4, 4)), "2")
    assert "row 1, column 2" in text
    assert "row 2, column 1" in text


def test_average_images() -> None:
    images = np.array([[[0, 2]], [[4, 6]], [[10, 10]]], dtype=np.uint8)
    labels = np.array([1, 1, 3])
    means = analysis.average_images(images, labels, np.array([1, 3]))
    np.testing.assert_array_equal(means, [[[2, 4]], [[10, 10]]])


def test_mistaken_for_ranks_true_digits_by_share() -> None:
    y_true = np.array([3, 3, 3, 3, 8, 8, 5, 5])
    y_pred = np.array([5, 5, 3, 3, 5, 8, 5, 5])
    ranking = analysis.mistaken_for(y_true, y_pred, 5, np.array([3, 5, 8]), include_target=False)
    assert [entry["label"] for entry in ranking] == [3, 8]  # 5 itself is left out; ties by label
    assert ranking[0] == {"label": 3, "count": 2, "total": 4, "percent": 50.0}
    assert ranking[1]["percent"] == 50.0


def test_mistaken_for_starts_with_the_targets_own_share() -> None:
    # the classic ranking: the share of true 7s read as 7 first, then the others by share
    y_true = np.array([7, 7, 7, 7, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([7, 7, 7, 1, 7, 7, 7, 2, 2, 2])
    ranking = analysis.mistaken_for(y_true, y_pred, 7, np.array([1, 2, 7]))
    assert [entry["label"] for entry in ranking] == [7, 1, 2]
    assert ranking[0] == {"label": 7, "count": 3, "total": 4, "percent": 75.0}
    assert [entry["percent"] for entry in ranking[1:]] == [100.0, 25.0]


def test_sample_per_class_balances_and_follows_the_seed() -> None:
    labels = np.array([0] * 50 + [1] * 5 + [2] * 45)  # class-sorted, like a Kaggle tree
    picked = analysis.sample_per_class(labels, 9, rng=0)
    assert [int((labels[picked] == c).sum()) for c in (0, 1, 2)] == [3, 3, 3]
    assert list(labels[picked]) == sorted(labels[picked])  # grouped by class
    assert len(set(picked.tolist())) == 9
    np.testing.assert_array_equal(picked, analysis.sample_per_class(labels, 9, rng=0))
    assert not np.array_equal(picked, analysis.sample_per_class(labels, 9, rng=1))
    assert list(picked[:3]) != [0, 1, 2]  # drawn at random, not the first images
    # a class with too few images gives its share to the others
    few = analysis.sample_per_class(labels, 30, rng=0)
    assert [int((labels[few] == c).sum()) for c in (0, 1, 2)] == [13, 5, 12]
    assert len(analysis.sample_per_class(labels, 500, rng=0)) == 100
    only = analysis.sample_per_class(labels, 4, rng=0, classes=np.array([1]))
    assert set(labels[only].tolist()) == {1}


def test_most_confused_pairs() -> None:
    matrix = np.array([[8, 2, 0], [0, 5, 5], [1, 0, 9]])
    pairs = analysis.most_confused_pairs(matrix, [0, 1, 2], top=5)
    assert pairs[0] == {"true": 1, "predicted": 2, "count": 5, "percent": 50.0}
    assert [(p["true"], p["predicted"]) for p in pairs] == [(1, 2), (0, 1), (2, 0)]


def test_worst_written_and_top_losses() -> None:
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.55, 0.45]])
    y = np.array([0, 0, 1, 1])
    classes = np.array([0, 1])
    np.testing.assert_array_equal(analysis.worst_written(proba, y, classes, label=0, k=1), [1])
    np.testing.assert_array_equal(analysis.worst_written(proba, y, classes, label=1, k=2), [3, 2])
    np.testing.assert_array_equal(analysis.top_losses(proba, y, classes, k=2), [1, 3])
    np.testing.assert_allclose(analysis.true_class_probability(proba, y, classes), [0.9, 0.4, 0.8, 0.45])
