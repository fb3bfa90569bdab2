"""The estimator contract, checked on every model, and each model's own behaviour."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import (
    check_classifier_not_supporting_multiclass,
    check_classifiers_train,
    check_methods_sample_order_invariance,
    check_methods_subset_invariance,
)

from digitlab.errors import SettingsError
from digitlab.models import MODELS, Majority, RandomScores, Template
from digitlab.models.base import features_outside_unit_range
from digitlab.models.settings import Flag, Integer, LayerSizes, Number, OneOf, Seed


def _arrays(data):
    return data.features("train"), data.train_labels, data.features("test"), data.test_labels


@pytest.fixture(scope="module")
def small(sample):
    return _arrays(sample.take("train", 0, 600).take("test", 0, 200))


@pytest.fixture(scope="module")
def small_binary(sample):
    return _arrays(sample.for_task("is-2").take("train", 0, 600).take("test", 0, 200))


def _data_for(kind, small, small_binary):
    return small_binary if MODELS[kind].binary_only else small


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_estimator_contract(kind, small, small_binary, seeded_model) -> None:
    X, y, X_test, y_test = _data_for(kind, small, small_binary)
    n_classes = len(np.unique(y))
    model = seeded_model(kind)
    with pytest.raises(NotFittedError):
        model.predict(X_test)
    assert model.fit(X, y) is model
    predicted = model.predict(X_test)
    assert predicted.dtype == y.dtype
    assert predicted.shape == y_test.shape
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), n_classes)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert 0.0 <= model.score(X_test, y_test) <= 1.0
    np.testing.assert_array_equal(model.classes_, np.arange(n_classes))
    for name, value in model.state_dict().items():
        assert isinstance(value, np.ndarray), name
        assert value.dtype.kind in "fiu", (name, value.dtype)
    with pytest.raises(ValueError, match="features"):
        model.predict(X_test[:, :100])
    # state round trip gives identical predictions in a fresh model
    fresh = MODELS[kind](**model.get_params()).load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh.predict_proba(X_test), proba)
    # clone gives an unfitted copy with the same settings
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "classes_")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_same_seed_gives_identical_weights(kind, small, small_binary, seeded_model) -> None:
    X, y, _X_test, _ = _data_for(kind, small, small_binary)
    first = seeded_model(kind).fit(X, y).state_dict()
    second = seeded_model(kind).fit(X, y).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_works_with_sklearn_tools(kind, small, small_binary, seeded_model) -> None:
    X, y, _, _ = _data_for(kind, small, small_binary)
    pipeline = make_pipeline(FunctionTransformer(lambda a: a * 1.0), seeded_model(kind))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_grid_search_over_template_metric(small) -> None:
    X, y, _X_test, _y_test = small
    search = GridSearchCV(Template(), {"metric": ["dot", "euclidean"]}, cv=3).fit(X, y)
    # nearest centroid beats the raw dot product on MNIST, where dark templates dominate
    assert search.best_params_ == {"metric": "euclidean"}


def test_template_is_the_class_average(small) -> None:
    X, y, _, _ = small
    model = Template().fit(X, y)
    np.testing.assert_allclose(model.templates_[3], X[y == 3].mean(axis=0), rtol=1e-5, atol=1e-6)
    # classic dot-product scores
    np.testing.assert_allclose(model.decision_function(X[:5]), X[:5] @ model.templates_.T, rtol=1e-5)


def test_template_accuracy_on_real_digits(sample) -> None:
    X, y = sample.features("train"), sample.train_labels
    X_test, y_test = sample.features("test"), sample.test_labels
    dot = Template().fit(X, y).score(X_test, y_test)
    nearest = Template(metric="euclidean").fit(X, y).score(X_test, y_test)
    assert 0.55 < dot < 0.75  # the classic exercise's weak point: darker templates win
    assert nearest > 0.78


def test_template_probabilities_are_calibrated_not_one_hot(sample) -> None:
    model = Template(metric="euclidean").fit(sample.features("train"), sample.train_labels)
    proba = model.predict_proba(sample.features("test"))
    confidence = proba.max(axis=1)
    correct = model.predict(sample.features("test")) == sample.test_labels
    # right answers are held with more confidence than wrong ones
    assert confidence[correct].mean() > confidence[~correct].mean() + 0.1
    assert 0.3 < confidence.mean() < 0.99


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_refused_state_leaves_the_model_as_it_was(kind, small, small_binary,
                                                    seeded_model) -> None:
    X, y, X_test, _ = _data_for(kind, small, small_binary)
    model = seeded_model(kind).fit(X, y)
    before = model.predict_proba(X_test)
    # Another model's state, right in every array but one.
    state = seeded_model(kind).fit(X[::-1][:300], y[::-1][:300]).state_dict()
    last = sorted(state)[-1]
    state[last] = np.zeros((2, 3, 4), dtype=state[last].dtype)
    with pytest.raises(ValueError, match=f"{last}.*shape"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.predict_proba(X_test), before)


def test_random_scores_refuse_a_seed_numpy_refuses() -> None:
    # A negative seed used to be stored, then every predict raised numpy's ValueError.
    with pytest.raises(SettingsError, match="random_state must be None or an integer >= 0"):
        RandomScores(random_state=-1).fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]))


def test_random_scores_are_a_function_of_each_image_alone() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((300, 64), dtype=np.float32)
    model = RandomScores(random_state=7).fit(X[:20], np.arange(20) % 10)
    scores = model.decision_function(X)
    assert scores.shape == (300, 10)
    assert np.all((scores >= 0) & (scores < 1))
    order = rng.permutation(300)
    np.testing.assert_array_equal(model.decision_function(X[order]), scores[order])
    np.testing.assert_array_equal(model.decision_function(X[17:18]), scores[17:18])
    other = np.vstack([rng.random((5, 64), dtype=np.float32), X[:3]])
    np.testing.assert_array_equal(model.decision_function(other)[5:], scores[:3])
    # one pixel changed, or another seed: other scores
    changed = X[:1].copy()
    changed[0, 40] += 1e-3
    assert not np.any(model.decision_function(changed) == scores[:1])
    reseeded = RandomScores(random_state=8).fit(X[:20], np.arange(20) % 10)
    assert np.mean(reseeded.decision_function(X) == scores) < 0.01


def test_random_scores_draw_every_class_alike_at_chance(sample) -> None:
    X, y = sample.features("train"), sample.train_labels
    model = RandomScores(random_state=0).fit(X, y)
    # 4,000 images: 0.1 +- 0.005 (one sigma), about 400 +- 19 of each class
    assert abs(model.score(X, y) - 0.1) < 0.02
    counts = np.bincount(model.predict(X), minlength=10)
    assert counts.min() > 400 - 5 * 19
    assert counts.max() < 400 + 5 * 19
    test = model.score(sample.features("test"), sample.test_labels)  # 0.1 +- 0.0095
    assert abs(test - 0.1) < 0.04


def test_random_scores_of_a_model_file_of_a_seed_alone() -> None:
    # A state written before per-image hashing (seed_ only) still loads and predicts.
    state = {"seed_": np.array(12345, dtype=np.int64), "classes_": np.arange(10),
             "n_features_in_": np.array(4, dtype=np.int64)}
    X = np.random.default_rng(2).random((50, 4), dtype=np.float32)
    model = RandomScores().load_state_dict(state)
    np.testing.assert_array_equal(model.predict(X), RandomScores().load_state_dict(state).predict(X))


@pytest.mark.parametrize("check", [check_methods_sample_order_invariance,
                                   check_methods_subset_invariance])
def test_random_scores_pass_scikit_learns_invariance_checks(check) -> None:
    with features_outside_unit_range():  # its data are not pixels
        check("RandomScores", RandomScores(random_state=0))


@pytest.mark.parametrize("kind", ["template", "mlp"])
def test_scores_of_an_image_do_not_depend_on_its_batch(kind, small, seeded_model) -> None:
    # float32 products rounded differently as BLAS blocked a batch and its subset (1e-7)
    X, y, X_test, _ = small
    model = seeded_model(kind).fit(X, y)
    scores = model.decision_function(X_test)
    assert scores.dtype == np.float64
    for part in (X_test[1::3], X_test[::-1], X_test[7:8]):
        rows = [int(np.flatnonzero((X_test == row).all(axis=1))[0]) for row in part]
        np.testing.assert_allclose(model.decision_function(part), scores[rows], rtol=1e-12, atol=1e-12)
    with features_outside_unit_range():  # its data are not pixels
        check_methods_subset_invariance(kind, seeded_model(kind))


@pytest.mark.parametrize("kind", ["majority", "random"])
def test_baselines_declare_a_poor_score(kind) -> None:
    # scikit-learn's check_classifiers_train asks for 83% on its toy data unless the
    # classifier says, as DummyClassifier does, that a poor score is what it is for.
    assert MODELS[kind]().__sklearn_tags__().classifier_tags.poor_score
    with features_outside_unit_range():  # its data are not pixels
        check_classifiers_train(kind, MODELS[kind]())
    assert not MODELS["softmax"]().__sklearn_tags__().classifier_tags.poor_score


def test_bad_template_metric() -> None:
    with pytest.raises(SettingsError, match="metric"):
        Template(metric="cosine").fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]))


def test_majority_predicts_the_most_frequent_class() -> None:
    X = np.zeros((6, 4), dtype=np.float32)
    y = np.array([7, 3, 3, 7, 3, 1])
    model = Majority().fit(X, y)
    np.testing.assert_array_equal(model.predict(X[:2]), [3, 3])
    np.testing.assert_allclose(model.predict_proba(X[:1]), [[1 / 6, 3 / 6, 2 / 6]])


def test_features_with_nan_are_refused(small) -> None:
    X, y, _, _ = small
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Template().fit(bad, y)


@pytest.mark.parametrize("kind", ["template", "softmax", "perceptron", "majority", "guess-and-check", "mlp"])
def test_continuous_y_is_refused_not_turned_into_classes(kind: str) -> None:
    """Fifty random floats are not fifty classes (issue 14): scikit-learn's rule and words."""
    from digitlab.models import MODELS

    rng = np.random.default_rng(0)
    X, y = rng.random((50, 16)), rng.random(50)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MODELS[kind]().fit(X, y)


@pytest.mark.parametrize(("X", "message"), [
    (np.zeros(16), "Reshape your data"),
    (np.zeros((0, 16)), "minimum of 1 is required"),
    (np.full((3, 16), np.nan), "Input X contains NaN"),
    (np.zeros((3, 16)) + 1j, "Complex data not supported"),
])
def test_bad_features_get_scikit_learns_words(X: np.ndarray, message: str) -> None:
    from digitlab.models import Template

    with pytest.raises(ValueError, match=message):
        Template().fit(X, np.arange(len(np.atleast_2d(X))) % 2)


def test_sparse_features_are_refused_plainly() -> None:
    import scipy.sparse

    from digitlab.models import Template

    with pytest.raises(TypeError, match="Sparse data was passed"):
        Template().fit(scipy.sparse.csr_matrix(np.eye(4)), [0, 1, 0, 1])


def test_a_wrong_feature_count_names_both() -> None:
    from digitlab.models import Template

    model = Template().fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="X has 3 features, but Template is expecting 4 features as input"):
        model.predict(np.eye(3))


@pytest.mark.parametrize("kind", ["template", "softmax", "perceptron", "mlp", "guess-and-check", "majority"])
def test_two_classes_give_one_decision_score_per_sample(kind: str, sample) -> None:
    """scikit-learn's convention (issue 14): shape (n,), positive for classes_[1]."""
    from digitlab.models import MODELS

    data = sample.for_task("is-2").take("train", 0, 600).take("test", 0, 300)
    settings = {"softmax": {"epochs": 3, "random_state": 0},
                "mlp": {"epochs": 3, "hidden": (8,), "random_state": 0},
                "perceptron": {"epochs": 3, "random_state": 0},
                "guess-and-check": {"n_candidates": 100, "random_state": 0}}
    model = MODELS[kind](**settings.get(kind, {})).fit(data.features("train"), data.train_labels)
    scores = model.decision_function(data.features("test"))
    assert scores.shape == (300,)
    predicted = model.predict(data.features("test"))
    decided = scores > 0
    if kind in ("perceptron", "guess-and-check"):  # a score of exactly 0 goes to class 1
        decided = scores >= 0
    if kind != "majority":  # a constant score says nothing about its sign
        np.testing.assert_array_equal(predicted, model.classes_[decided.astype(int)])


def test_roc_auc_works_for_a_two_class_softmax(sample) -> None:
    """cross_val_score(..., scoring="roc_auc") gave [nan nan nan] with (n, 2) scores."""
    from sklearn.model_selection import StratifiedKFold

    data = sample.for_task("is-2")
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(MODELS["softmax"](epochs=5, random_state=0), data.features("train"),
                             data.train_labels, cv=folds, scoring="roc_auc")
    assert np.all(np.isfinite(scores))
    assert scores.min() > 0.9


@pytest.mark.parametrize("kind", ["softmax", "perceptron", "mlp", "cnn"])
def test_one_class_is_refused_before_fitting_in_scikit_learns_words(kind: str) -> None:
    if kind == "cnn":
        pytest.importorskip("torch")
    model = MODELS[kind]()
    with pytest.raises(ValueError, match=r"y holds 1 class \(\[5\]\); a '\w+' model needs two classes or more"):
        model.fit(np.zeros((4, 16)), np.array([5, 5, 5, 5]))
    assert not hasattr(model, "classes_")  # refused before any state changed


def test_a_two_class_model_refuses_ten_as_a_setting() -> None:
    with pytest.raises(SettingsError, match=r"y holds 10 classes\. Only binary classification is "
                       r"supported\. The type of the target is multiclass\. .*--task is-2"):
        MODELS["guess-and-check"](n_candidates=3).fit(np.zeros((10, 4)), np.arange(10))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_setting_is_declared_once_as_data(kind) -> None:
    # settings_spec lists exactly the __init__ settings: none unchecked, none stale.
    cls = MODELS[kind]
    assert set(cls.settings_spec) == set(cls().get_params(deep=False))
    for name, value in cls().get_params(deep=False).items():
        assert cls.settings_spec[name].allows(value), f"the default of {name} is refused"


@pytest.mark.parametrize(("setting", "good", "bad", "message"), [
    (Integer(1), [1, 7, np.int64(3)], [0, 2.5, True, "1", None], "an integer >= 1"),
    (Integer(0, none=True), [0, None], [-1, 1.0], "an integer >= 0 or None"),
    (Number(0.0, closed="neither"), [1e-9, 5, 0.5], [0, -1, float("nan"), float("inf"), True, "1"],
     "a number > 0"),
    (Number(0.0, 1.0, closed="left"), [0.0, 0.99], [1.0, -0.1], "a number in [0, 1)"),
    (Number(0.0, 1.0, closed="right", none=True), [1.0, None], [0.0], "a number in (0, 1] or None"),
    (Flag(), [True, False, np.bool_(True)], [None, 1, "yes"], "True or False"),
    (OneOf(("a", "b")), ["a", "b"], ["c", None, 1], "one of 'a', 'b'"),
    (Seed(), [None, 0, 5, np.random.default_rng(0)], [-1, 1.5, "0"],
     "None, an integer >= 0 or a numpy Generator"),
    (Seed(generator=False), [None, 3], [np.random.default_rng(0)], "None or an integer >= 0"),
    (LayerSizes(), [(), (16,), [25, 15], 8], [(0,), "16", (1.5,), None], "a tuple of positive"),
])
def test_settings_allow_what_they_say(setting, good, bad, message) -> None:
    for value in good:
        setting.check("x", value)
    for value in bad:
        with pytest.raises(SettingsError, match=f"^x must be {re.escape(message)}"):
            setting.check("x", value)


@pytest.mark.parametrize("kind", ["template", "perceptron", "softmax", "mlp", "guess-and-check"])
def test_a_bad_setting_leaves_a_fitted_model_as_it_was(kind, sample, seeded_model) -> None:
    data = sample.for_task("is-2") if MODELS[kind].binary_only else sample
    X, y = data.features("train")[:300], data.train_labels[:300]
    model = seeded_model(kind).fit(X, y)
    before = model.state_dict()
    name = next(iter(sorted(model.settings_spec)))
    model.set_params(**{name: "not a setting"})
    with pytest.raises(SettingsError, match=f"^{name} must be"):
        model.fit(X[:100], y[:100])
    assert all(np.array_equal(before[key], value) for key, value in model.state_dict().items())


def test_a_two_class_model_refuses_three_in_scikit_learns_words() -> None:
    # Its data are not pixels: refused before X is looked at, so no DataWarning either.
    check_classifier_not_supporting_multiclass("GuessAndCheck", MODELS["guess-and-check"](n_candidates=3))
    model = MODELS["guess-and-check"](n_candidates=3)
    with pytest.raises(SettingsError):
        model.fit(np.full((6, 4), 0.9), np.arange(6) % 3)  # a light background, not said
    assert not hasattr(model, "light_background_")


def test_a_broadcast_row_is_checked_once_and_still_refused_when_not_finite() -> None:
    """Features that repeat one row (a read-only broadcast view, as a model that reads
    no pixels gets) have that row checked; a NaN in it is still scikit-learn's error."""
    y = np.arange(600) % 3
    zeros = np.broadcast_to(np.zeros(784, np.float32), (600, 784))
    assert Majority().fit(zeros, y).score(zeros, y) == pytest.approx(1 / 3, abs=0.01)
    row = np.zeros(784, np.float32)
    row[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Majority().fit(np.broadcast_to(row, (600, 784)), y)
    fitted = Majority().fit(zeros, y)
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.broadcast_to(row, (600, 784)))
