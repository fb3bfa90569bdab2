"""Each metric against a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitlab import metrics


def test_accuracy_and_the_majority_baseline_of_a_lazy_two_detector() -> None:
    # 10 images, one 2: "never a 2" is 90% accurate and useless.
    y_true = np.array([0] * 9 + [1])
    never = np.zeros(10, dtype=np.int64)
    assert metrics.accuracy(y_true, never) == pytest.approx(0.9)
    assert metrics.majority_baseline(np.array([0, 0, 1]), y_true) == pytest.approx(0.9)
    assert metrics.balanced_accuracy(y_true, never) == pytest.approx(0.5)


def test_majority_baseline_ties_go_to_the_smallest_label() -> None:
    assert metrics.majority_baseline(np.array([3, 1, 3, 1]), np.array([1, 1, 3])) == pytest.approx(2 / 3)


def test_per_class_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    table = metrics.per_class(y_true, y_pred, [0, 1, 2])
    assert table["0"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert table["1"]["precision"] == pytest.approx(2 / 3)
    assert table["1"]["recall"] == 1.0
    assert table["1"]["f1"] == pytest.approx(0.8)
    assert table["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_confusion_by_hand() -> None:
    matrix = metrics.confusion(np.array([0, 0, 1, 2]), np.array([0, 2, 1, 1]), [0, 1, 2])
    np.testing.assert_array_equal(matrix, [[1, 0, 1], [0, 1, 0], [0, 1, 0]])
    assert matrix.dtype == np.int64


def test_costs_by_hand() -> None:
    outputs = np.array([[0.5, 0.5], [0.2, 0.8]])
    y = np.array([0, 1])
    # ||(0.5,0.5)-(1,0)||^2 = 0.5 ; ||(0.2,0.8)-(0,1)||^2 = 0.08 ; mean 0.29
    assert metrics.squared_distance_cost(outputs, y) == pytest.approx(0.29)
    assert metrics.cross_entropy(outputs, y) == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)
    p = np.array([0.9, 0.2])
    y01 = np.array([1, 0])
    assert metrics.binary_cross_entropy(p, y01) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    # certainty of the wrong answer is large but finite
    assert math.isfinite(metrics.cross_entropy(np.array([[1.0, 0.0]]), np.array([1])))


def test_evaluate_predictions_holds_every_key() -> None:
    result = metrics.evaluate_predictions(
        np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]),
        np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]), np.array([0, 1]),
        y_train=np.array([0, 0, 1]),
    )
    assert result["accuracy"] == 0.75
    assert result["balanced_accuracy"] == 0.75
    assert result["majority_baseline"] == 0.5
    assert result["confusion"] == {"labels": [0, 1], "matrix": [[2, 0], [1, 1]]}
    assert set(result["costs"]) == {"cross_entropy", "brier_score", "binary_cross_entropy"}
    assert result["costs"]["brier_score"] == pytest.approx((0.02 + 0.08 + 0.72 + 0.18) / 4)


def test_labels_the_model_never_saw_count_as_wrong_without_crashing() -> None:
    result = metrics.evaluate_predictions(
        np.array([0, 5]), np.array([0, 0]), np.array([[1.0, 0.0], [0.6, 0.4]]), np.array([0, 1]),
    )
    assert result["accuracy"] == 0.5
    assert result["confusion"]["labels"] == [0, 1, 5]


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:857, table I, Wilson score method
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(correct, total, low, high) -> None:
    found = metrics.wilson_interval(correct, total)
    assert found == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_by_the_formula_and_edge_cases() -> None:
    # the score interval by hand: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    k, n, z = 197, 200, 1.959963984540054
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
    assert metrics.wilson_interval(k, n) == pytest.approx(expected, abs=1e-12)
    low, high = metrics.wilson_interval(10, 10)
    assert high == 1.0
    assert low < 1.0
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))
    assert metrics.format_interval((0.9568, 0.9949)) == "95.7-99.5%"
    assert metrics.format_interval((math.nan, math.nan)) == ""


def test_evaluate_predictions_gives_the_accuracy_interval() -> None:
    y = np.array([0, 1] * 50)
    predicted = y.copy()
    predicted[:3] = 1 - predicted[:3]
    proba = np.eye(2)[predicted]
    result = metrics.evaluate_predictions(y, predicted, proba, np.array([0, 1]))
    assert result["accuracy_ci"] == pytest.approx(list(metrics.wilson_interval(97, 100)))
    assert result["accuracy_ci"][0] < result["accuracy"] < result["accuracy_ci"][1]
