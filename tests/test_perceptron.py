"""Guess-and-check search and the perceptron rule, against plain reference loops."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score

from digitlab.errors import SettingsError
from digitlab.models import GuessAndCheck, Majority, Perceptron, guess_and_check_engine
from digitlab.models import guess_and_check_products as products_module
from digitlab.models.guess_and_check import guess_and_check_plain
from digitlab.models.guess_and_check_engine import _CandidateScorer
from digitlab.models.guess_and_check_products import Float32Products, PixelProducts
from digitlab.models.training import Progress

# ---------------------------------------------------------------- reference loops


def plain_guess_and_check(X, y, n_candidates, seed, weight_range=1.0, bias_range=20.0):
    """The readable loop, ``guess_and_check_plain``, in the form these tests compare against."""
    best = guess_and_check_plain(
        X, y == 1, n_candidates, weight_range=weight_range, bias_range=bias_range, rng=seed
    )
    history = list(zip(best.history["candidate"], best.history["best_accuracy"], strict=True))
    return {"count": best.count, "index": best.index, "w": best.w, "b": best.b, "history": history}


def textbook_guess_and_check(X, y, n_candidates, seed, weight_range=1.0, bias_range=20.0):
    """The classic loop, one candidate at a time, in float64; a strict > keeps the first best."""
    rng = np.random.default_rng(seed)
    X64 = X.astype(np.float64)
    best = {"count": -1, "index": -1, "w": None, "b": None, "history": []}
    for i in range(n_candidates):
        w = rng.uniform(-weight_range, weight_range, X.shape[1])
        b = rng.uniform(-bias_range, bias_range)
        count = int(np.count_nonzero((X64 @ w + b >= 0) == (y == 1)))
        if count > best["count"]:
            best.update(count=count, index=i, w=w, b=b)
            best["history"].append((i, count / len(y)))
    return best


def plain_perceptron(X, signs, epochs, averaged):
    """Rosenblatt's rule sample by sample, no shuffling; averaging by summing copies."""
    n, d = X.shape
    W = np.zeros((signs.shape[1], d + 1))
    total = np.zeros_like(W)
    X1 = np.hstack([X.astype(np.float64), np.ones((n, 1))])
    for _ in range(epochs):
        for i in range(n):
            for c in range(signs.shape[1]):
                if signs[i, c] * (W[c] @ X1[i]) <= 0:
                    W[c] += signs[i, c] * X1[i]
            total += W
    final = total / (epochs * n) if averaged else W
    return final[:, :-1], final[:, -1]


@pytest.fixture(scope="module")
def is2(sample):
    data = sample.for_task("is-2")
    return data.features("train"), data.train_labels, data.features("test"), data.test_labels


def _float32_products(X, weight_range, bias_range, work, workers) -> Float32Products:
    return Float32Products(X, weight_range, bias_range)


@pytest.fixture(autouse=True)
def _float32_unless_asked(request, monkeypatch) -> None:
    """Races use float32 products unless a test asks for ``products``: whether torch is
    imported already (so pixel products apply) would otherwise depend on the test order."""
    if "products" not in request.fixturenames:
        monkeypatch.setattr(guess_and_check_engine, "_choose_products", _float32_products)


@pytest.fixture(params=["float32", "int8"])
def products(request, monkeypatch) -> Iterator[str]:
    """Races with float32 products, or with int8 pixel products (every test using this
    fixture fits on pixels, and the int8 runs check that those products were used)."""
    built: list[PixelProducts] = []
    if request.param == "float32":
        monkeypatch.setattr(guess_and_check_engine, "_choose_products", _float32_products)
    else:
        pytest.importorskip("torch")
        monkeypatch.setattr(products_module, "WORTH_IMPORTING_TORCH", 0.0)
        original = PixelProducts.__init__

        def spy(self: PixelProducts, *args: object, **kwargs: object) -> None:
            original(self, *args, **kwargs)
            built.append(self)

        monkeypatch.setattr(PixelProducts, "__init__", spy)
    yield str(request.param)
    assert bool(built) == (request.param == "int8")


@pytest.fixture(scope="module")
def small_is2(is2):
    X, y, _, _ = is2
    return X[:500], y[:500]


# ---------------------------------------------------------------- guess and check


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("batch_size", [1, 64, 97, 2048])
def test_guess_and_check_picks_exactly_what_the_plain_loop_picks(
    small_is2, seed, batch_size, products
) -> None:
    X, y = small_is2
    n_candidates = 400  # 97 does not divide it; 2048 is one (ramped) chunk sequence
    reference = plain_guess_and_check(X, y, n_candidates, seed)
    model = GuessAndCheck(n_candidates=n_candidates, batch_size=batch_size, random_state=seed).fit(X, y)
    assert int(model.best_candidate_) == reference["index"]
    assert float(model.best_train_accuracy_) == reference["count"] / len(y)
    # the very numbers the loop drew, bit for bit
    assert model.coef_.dtype == np.float64
    np.testing.assert_array_equal(model.coef_, reference["w"])
    assert float(model.intercept_) == reference["b"]
    assert (
        list(zip(model.history_["candidate"], model.history_["best_accuracy"], strict=True))
        == (reference["history"])
    )
    # and the fitted model predicts what the search counted
    assert model.score(X, y) == float(model.best_train_accuracy_)


@pytest.mark.parametrize(("seed", "weight_range", "bias_range"), [(1, 1.0, 20.0), (3, 0.37, 2.5)])
def test_the_readable_loop_is_the_textbook_loop(small_is2, seed, weight_range, bias_range) -> None:
    X, y = small_is2
    textbook = textbook_guess_and_check(X, y, 120, seed, weight_range, bias_range)
    readable = plain_guess_and_check(X, y, 120, seed, weight_range, bias_range)
    assert len(textbook["history"]) >= 2  # more than the first candidate was kept
    assert readable.keys() == textbook.keys()
    for key, value in textbook.items():
        np.testing.assert_array_equal(readable[key], value, err_msg=key)


def test_plain_engine_gives_the_fast_engines_model(small_is2) -> None:
    X, y = small_is2
    reports: dict[str, list[Progress]] = {"plain": [], "fast": []}
    models = {
        engine: GuessAndCheck(n_candidates=300, engine=engine, random_state=6).fit(
            X, y, callback=reports[engine].append
        )
        for engine in ("plain", "fast")
    }
    plain, fast = models["plain"], models["fast"]
    for name in GuessAndCheck._state_names:
        np.testing.assert_array_equal(getattr(plain, name), getattr(fast, name), err_msg=name)
    assert plain.history_ == fast.history_
    assert len(plain.history_["candidate"]) >= 2
    assert plain.n_tried_ == fast.n_tried_ == 300
    assert not plain.interrupted_
    bests = {engine: [p for p in got if p.stage == "best"] for engine, got in reports.items()}
    assert bests["plain"] == bests["fast"]
    # the plain loop reports after every candidate
    plain_done = [p.step for p in reports["plain"] if p.stage == "candidates"]
    assert plain_done == list(range(1, 301))


def test_plain_engine_ctrl_c_keeps_the_best_so_far(small_is2) -> None:
    X, y = small_is2

    def interrupt_at_40(progress: Progress) -> None:
        if progress.stage == "candidates" and progress.step == 40:
            raise KeyboardInterrupt

    model = GuessAndCheck(n_candidates=300, engine="plain", random_state=1).fit(
        X, y, callback=interrupt_at_40
    )
    assert model.interrupted_
    assert model.n_tried_ == 40
    reference = plain_guess_and_check(X, y, 40, 1)
    assert int(model.best_candidate_) == reference["index"]
    np.testing.assert_array_equal(model.coef_, reference["w"])


def test_guess_and_check_other_ranges_match_the_plain_loop(small_is2, products) -> None:
    X, y = small_is2
    reference = plain_guess_and_check(X, y, 150, 3, weight_range=0.37, bias_range=2.5)
    model = GuessAndCheck(
        n_candidates=150, weight_range=0.37, bias_range=2.5, batch_size=40, random_state=3
    ).fit(X, y)
    assert int(model.best_candidate_) == reference["index"]
    np.testing.assert_array_equal(model.coef_, reference["w"])


def _first_candidates(seed, k, d, bias_range=20.0):
    """The plain loop's first ``k`` candidates for ``seed``: weights (k, d), biases (k,)."""
    draws = _draws(seed, k, d, bias_range)
    return np.array([w for w, _ in draws]), np.array([b for _, b in draws])


def _scores_on_the_edge(n=240, d=24, k=6, seed=5):
    """Rows whose float64 score for one of the first k candidates is within ~1e-6 of 0.

    Built from the candidates a seed draws: each row is random, then one feature
    is set so that candidate ``i % k`` scores (almost exactly) zero on it.
    """
    rng = np.random.default_rng(seed)
    W, b = _first_candidates(seed, k, d)
    X = rng.random((n, d))
    for i in range(n):
        j = i % k
        last = int(np.argmax(np.abs(W[j])))
        X[i, last] = 0.0
        X[i, last] = -(X[i] @ W[j] + b[j]) / W[j, last]
    X = X.astype(np.float32)
    y = rng.integers(0, 2, n)
    return X, y, W, b


@pytest.mark.parametrize("probe_rows", [128, 2])  # unsure rows met in the probe / in the races
def test_float32_rounding_never_changes_a_count(probe_rows, monkeypatch) -> None:
    monkeypatch.setattr(guess_and_check_engine, "_PROBE_ROWS", probe_rows)
    X, y, W, b = _scores_on_the_edge()
    exact = np.count_nonzero((X.astype(np.float64) @ W.T + b >= 0) == (y == 1)[:, None], axis=0)
    naive = np.count_nonzero(
        (X @ W.T.astype(np.float32) + b.astype(np.float32) >= 0) == (y == 1)[:, None], axis=0
    )
    assert np.any(naive != exact)  # float32 alone does get some of these rows wrong
    with _CandidateScorer(X, y == 1, 1.0, 20.0) as scorer:
        positions, counts = scorer.contenders(W, b, bar=-1)
        np.testing.assert_array_equal(positions, np.arange(len(b)))
        np.testing.assert_array_equal(counts, exact)
        # with a bar, the survivors are exactly those above it, still counted exactly
        bar = int(np.sort(exact)[-3])
        positions, counts = scorer.contenders(W, b, bar=bar)
        assert set(np.flatnonzero(exact > bar)) <= set(positions.tolist())
        np.testing.assert_array_equal(counts, exact[positions])


@pytest.mark.usefixtures("any_feature_range")  # rows placed on the edge leave [0, 1]
@pytest.mark.parametrize("batch_size", [1, 4, 2048])
def test_guess_and_check_on_the_edge_matches_the_float64_loop(batch_size) -> None:
    X, y, _, _ = _scores_on_the_edge()
    reference = plain_guess_and_check(X, y, 6, 5)
    model = GuessAndCheck(n_candidates=6, batch_size=batch_size, random_state=5).fit(X, y)
    assert int(model.best_candidate_) == reference["index"]
    assert float(model.best_train_accuracy_) == reference["count"] / len(y)


def _pixel_rows(pixels: np.ndarray) -> np.ndarray:
    """Features the way ``Dataset.features`` makes them: float32 pixel * float32(1/255)."""
    return pixels.astype(np.float32) * np.float32(1 / 255)


def _pixel_scores_on_the_edge(n=300, d=24, k=6, seed=5, bias_range=2.5):
    """Pixel rows whose float64 score for one of the first k candidates is within a
    few thousandths of 0: the pixels of each row, largest weights first, are set to
    the values nearest the zero of candidate ``i % k`` (a step moves it by |w| / 255)."""
    rng = np.random.default_rng(seed)
    W, b = _first_candidates(seed, k, d, bias_range)
    pixels = rng.integers(0, 256, (n, d))
    for i in range(n):
        j = i % k
        for col in np.argsort(-np.abs(W[j])):
            pixels[i, col] = 0
            others = _pixel_rows(pixels[i]).astype(np.float64) @ W[j] + b[j]
            pixels[i, col] = np.clip(np.rint(-others / W[j, col] * 255), 0, 255)
    X = _pixel_rows(pixels)
    y = rng.integers(0, 2, n)
    return X, y, W, b


@pytest.mark.parametrize("probe_rows", [128, 2])  # unsure rows met in the probe / in the races
def test_pixel_products_never_change_a_count(probe_rows, monkeypatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(guess_and_check_engine, "_PROBE_ROWS", probe_rows)
    X, y, W, b = _pixel_scores_on_the_edge()
    scores64 = X.astype(np.float64) @ W.T + b
    exact = np.count_nonzero((scores64 >= 0) == (y == 1)[:, None], axis=0)
    pixels = PixelProducts.for_features(X, 1.0, 2.5, work=np.inf)
    assert pixels is not None
    coarse = pixels.coarse()
    w, offsets = pixels.empty(len(b))
    pixels.candidates(W, b, w, offsets)
    rows = pixels.rows(np.arange(len(X)))
    for products, tolerance in ((pixels, pixels.tolerance), (coarse, coarse.tolerance)):
        scores = products.scores(rows, w, offsets, np.empty((len(X), len(b)), np.float32))
        # within the tolerance here too (6 candidates take the thin path)
        error = np.abs(scores.astype(np.float64) - scores64 / pixels.unit)
        assert np.all(error <= tolerance.astype(np.float64)[:, None])
        near = np.abs(scores) <= tolerance[:, None]
        assert near.sum() >= 10  # many rows are unsure: the tolerance is what decides them
        # the sign alone would get some rows wrong (8 bits: many, 16: a few)
        assert np.any((scores >= 0) != (scores64 >= 0))
    with _CandidateScorer(X, y == 1, 1.0, 2.5, products=pixels) as scorer:
        assert scorer.coarse is not None
        positions, counts = scorer.contenders(W, b, bar=-1)  # no bar: the exact tier alone
        np.testing.assert_array_equal(positions, np.arange(len(b)))
        np.testing.assert_array_equal(counts, exact)
        for bar in (int(np.sort(exact)[-3]), int(exact.min()) - 1):  # coarse tier, then exact
            positions, counts = scorer.contenders(W, b, bar=bar)
            assert set(np.flatnonzero(exact > bar)) <= set(positions.tolist())
            np.testing.assert_array_equal(counts, exact[positions])


@pytest.mark.parametrize("weight_range", [1.0, 0.37, 3.0])
def test_pixel_products_stay_within_their_tolerance(weight_range) -> None:
    """Both kinds of pixel score stay within half their tolerance (twice the bound) of
    the float64 score, on real digits and on extreme weights, biases and pixels."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    pixels = np.concatenate([
        rng.integers(0, 256, (200, 784)),
        np.full((1, 784), 255),  # every pixel white: the largest |x|_1
        np.zeros((1, 784), np.int64),
        np.where(rng.random((50, 784)) < 0.5, 0, 255),
    ])
    X = _pixel_rows(pixels)
    W = rng.uniform(-weight_range, weight_range, (300, 784))
    W[0], W[1] = weight_range, -weight_range  # the ends of the range
    W[2] = np.nextafter(weight_range, 0)
    b = rng.uniform(-20, 20, 300)
    b[0], b[1] = -20, 20
    products = PixelProducts.for_features(X, weight_range, 20.0, work=np.inf)
    assert products is not None
    w, offsets = products.empty(len(b))
    products.candidates(W, b, w, offsets)
    assert w.dtype == np.int8
    assert np.abs(w[0]).max() <= 127  # the high halves
    exact = X.astype(np.float64) @ W.T + b
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # what the caller had: set back after each block
    try:
        scored = []
        for kind in (products, products.coarse()):
            with kind.single_threaded():
                assert torch.get_num_threads() == 1
                rows = kind.rows(np.arange(len(X)))
                scored.append(kind.scores(rows, w, offsets, np.empty_like(exact, np.float32)))
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    for kind, scores in zip((products, products.coarse()), scored, strict=True):
        error = np.abs(scores.astype(np.float64) * products.unit - exact)
        tolerance = kind.tolerance.astype(np.float64)[:, None] * products.unit
        assert np.all(error <= tolerance / 2)
        assert error.max() > tolerance.max() / 1e4  # the bound is a bound, not a guess
    # a few candidates (fewer than _THIN columns, both halves too) take the product the
    # other way round: the very same numbers
    few = (products_module._THIN - 1) // 2
    for kind, scores in zip((products, products.coarse()), scored, strict=True):
        thin = kind.scores(kind.rows(np.arange(len(X))), kind.take(w, slice(0, few)),
                           offsets[:few], np.empty((len(X), few), np.float32))
        np.testing.assert_array_equal(thin, scores[:, :few])
    # 16 bits: a tolerance well below float32's on the same rows
    float32 = Float32Products(X, weight_range, 20.0)
    assert np.all(products.tolerance * products.unit < float32.tolerance)


@pytest.mark.parametrize(
    "features",
    [
        lambda p: p.astype(np.float32) / np.float32(254),  # another scale
        lambda p: _pixel_rows(p).astype(np.float64),  # float64
        lambda p: _pixel_rows(p) - np.float32(0.5),  # centred
        lambda p: np.where(p == 7, np.nan, _pixel_rows(p)).astype(np.float32),  # a NaN
        lambda p: _pixel_rows(p) * np.float32(1.0001),  # a hair off
    ],
)
def test_pixel_products_apply_only_to_pixel_features(features) -> None:
    pytest.importorskip("torch")
    pixels = np.random.default_rng(0).integers(0, 256, (9000, 20))  # more than one block
    assert PixelProducts.for_features(_pixel_rows(pixels), 1.0, 20.0, work=np.inf) is not None
    assert PixelProducts.for_features(features(pixels), 1.0, 20.0, work=np.inf) is None
    late = _pixel_rows(pixels)
    late[8500, 3] = np.float32(0.3)  # no pixel value, past the first block
    assert PixelProducts.for_features(late, 1.0, 20.0, work=np.inf) is None


def test_torch_is_imported_for_pixel_products_only_when_it_pays(monkeypatch) -> None:
    pytest.importorskip("torch")
    X = _pixel_rows(np.random.default_rng(0).integers(0, 256, (50, 20)))
    below = products_module.WORTH_IMPORTING_TORCH / 2
    assert PixelProducts.for_features(X, 1.0, 20.0, work=below) is not None  # torch imported
    # as in a process that has not imported torch (it cannot be imported twice: no fit here)
    monkeypatch.delitem(sys.modules, "torch")
    assert PixelProducts.for_features(X, 1.0, 20.0, work=below) is None
    assert not products_module._torch_worth_it(below)
    assert products_module._torch_worth_it(products_module.WORTH_IMPORTING_TORCH)
    assert "torch" not in sys.modules


@pytest.mark.parametrize("batch_size", [1, 3, 7, 2048])
def test_ties_go_to_the_first_candidate(batch_size, products) -> None:
    # Blank images: a candidate says "yes" to every image when b >= 0, "no" otherwise,
    # so every candidate with b >= 0 ties, and so does every one with b < 0.
    X = np.zeros((10, 5), dtype=np.float32)
    y = np.array([1] * 7 + [0] * 3)
    model = GuessAndCheck(n_candidates=50, batch_size=batch_size, random_state=5).fit(X, y)
    draws = np.random.default_rng(5)
    biases = [(draws.uniform(-1, 1, 5), draws.uniform(-20, 20))[1] for _ in range(50)]
    first_yes = next(i for i, b in enumerate(biases) if b >= 0)
    assert first_yes == 6  # not the first candidate, and 19 later ones tie with it
    assert int(model.best_candidate_) == first_yes
    assert float(model.best_train_accuracy_) == 0.7


@pytest.fixture
def tiny_blocks(monkeypatch) -> None:
    """Blocks of a few rows, so races cut at the class boundary and drop candidates mid-way."""
    for name, value in (("_MIN_CELLS", 1), ("_MAX_CELLS", 40), ("_MIN_ROWS", 3), ("_MAX_ROWS", 11),
                        ("_PROBE_ROWS", 4)):
        monkeypatch.setattr(guess_and_check_engine, name, value)


@pytest.mark.parametrize("positive_is_minority", [True, False])
@pytest.mark.parametrize("minority_first", [True, False])
def test_blocks_visit_every_row_once_from_either_end(
    small_is2, positive_is_minority, minority_first, monkeypatch
) -> None:
    monkeypatch.setattr(guess_and_check_engine, "_PROBE_ROWS", 20)  # rows of both classes remain
    X, y = small_is2
    positive = (y == 1) if positive_is_minority else (y != 1)
    assert (2 * positive.sum() <= len(y)) == positive_is_minority
    with _CandidateScorer(X, positive, 1.0, 20.0) as scorer:
        order = scorer.order
        np.testing.assert_array_equal(np.sort(order), np.arange(len(y)))
        np.testing.assert_array_equal(scorer.ordered_X, X[order])
        # majority rows first, then the minority: each part read from its own end
        minority = positive if positive_is_minority else ~positive
        np.testing.assert_array_equal(minority[order], np.arange(len(y)) >= scorer.n_majority)
        probe = scorer.probe_front + scorer.probe_back
        assert 0 < probe < len(y)
        visited = [scorer.probe_rows]  # the probe: rows from both ends
        assert set(minority[scorer.probe_rows]) == {False, True}
        seen = 0
        while seen < len(y) - probe:
            block, lo, hi, rows, block_positive = scorer._block(seen, 7, minority_first)
            assert 0 < len(block) <= 7
            np.testing.assert_array_equal(block, X[rows])
            assert np.all(positive[rows] == block_positive)  # never across the class boundary
            assert np.all(lo == -hi)
            assert np.all(hi > 0)
            if len(visited) == 1:  # the first block is the minority's when it goes first
                assert np.all(minority[rows] == minority_first)
            visited.append(rows)
            seen += len(block)
    np.testing.assert_array_equal(np.sort(np.concatenate(visited)), np.arange(len(y)))


@pytest.mark.usefixtures("tiny_blocks")
@pytest.mark.parametrize("flip", [False, True])  # positives the minority / the majority
@pytest.mark.parametrize("batch_size", [5, 64])
def test_tiny_blocks_pick_exactly_what_the_plain_loop_picks(
    small_is2, flip, batch_size, products
) -> None:
    X, y = small_is2
    y = 1 - y if flip else y
    reference = plain_guess_and_check(X, y, 200, 6)
    model = GuessAndCheck(n_candidates=200, batch_size=batch_size, random_state=6).fit(X, y)
    assert len(reference["history"]) >= 2
    assert int(model.best_candidate_) == reference["index"]
    assert float(model.best_train_accuracy_) == reference["count"] / len(y)
    np.testing.assert_array_equal(model.coef_, reference["w"])
    assert list(zip(*model.history_.values(), strict=True)) == reference["history"]


@pytest.mark.usefixtures("tiny_blocks")
@pytest.mark.parametrize("positives", [7, 3])  # "yes" the majority / the minority
def test_ties_with_tiny_blocks_go_to_the_first_candidate(positives, products) -> None:
    # Blank images and a few bright ones: every candidate says the same on the blanks,
    # so many tie; the first of the tied best must win, whichever end the races start from.
    X = np.zeros((40, 5), dtype=np.float32)
    X[::4] = 1.0
    y = (np.arange(40) % 10 < positives).astype(np.int64)
    reference = plain_guess_and_check(X, y, 300, 5)
    model = GuessAndCheck(n_candidates=300, batch_size=16, random_state=5).fit(X, y)
    counts = [int(np.count_nonzero((X.astype(np.float64) @ w + b >= 0) == (y == 1)))
              for w, b in _draws(5, 300, 5)]
    assert counts.count(max(counts)) >= 2  # a real tie for the best
    assert int(model.best_candidate_) == reference["index"] == counts.index(max(counts))
    assert list(zip(*model.history_.values(), strict=True)) == reference["history"]


def _draws(seed, n, d, bias_range=20.0):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-1, 1, d), rng.uniform(-bias_range, bias_range)) for _ in range(n)]


def test_predicts_yes_at_exactly_zero(small_is2) -> None:
    X, y = small_is2
    model = GuessAndCheck(n_candidates=5, random_state=0).fit(X, y)
    state = model.state_dict()
    state["coef_"] = np.zeros_like(state["coef_"])
    state["intercept_"] = np.array(0.0)
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.predict(X[:3]), [1, 1, 1])
    np.testing.assert_array_equal(model.binary_decision(X[:3]), [0.0, 0.0, 0.0])


def test_callback_reports_each_new_best_and_each_chunk(small_is2) -> None:
    X, y = small_is2
    reports: list[Progress] = []
    model = GuessAndCheck(n_candidates=700, batch_size=100, random_state=2).fit(
        X, y, callback=reports.append
    )
    bests = [p for p in reports if p.stage == "best"]
    chunks = [p for p in reports if p.stage == "candidates"]
    accuracies = [p.logs["accuracy"] for p in bests]
    assert len(bests) >= 2
    assert all(a < b for a, b in itertools.pairwise(accuracies))
    assert [p.step - 1 for p in bests] == model.history_["candidate"]
    assert accuracies == model.history_["best_accuracy"]
    assert bests[-1].step == int(model.best_candidate_) + 1
    assert accuracies[-1] == float(model.best_train_accuracy_)
    assert all(p.total == 700 for p in reports)
    done = [p.step for p in chunks]
    assert done == sorted(done)
    assert done[-1] == 700
    assert chunks[-1].logs["best_accuracy"] == float(model.best_train_accuracy_)


def test_ctrl_c_keeps_the_best_so_far(small_is2) -> None:
    X, y = small_is2
    seen: list[int] = []

    def interrupt_after_two_chunks(progress: Progress) -> None:
        if progress.stage == "candidates":
            seen.append(progress.step)
            if len(seen) == 2:
                raise KeyboardInterrupt

    model = GuessAndCheck(n_candidates=5000, batch_size=64, random_state=0).fit(
        X, y, callback=interrupt_after_two_chunks
    )
    assert model.n_tried_ == seen[-1] < 5000
    reference = plain_guess_and_check(X, y, model.n_tried_, 0)
    assert int(model.best_candidate_) == reference["index"]


def test_guess_and_check_refuses_more_than_two_classes() -> None:
    X = np.random.default_rng(0).random((9, 4)).astype(np.float32)
    with pytest.raises(SettingsError, match="two-class"):
        GuessAndCheck(n_candidates=3).fit(X, np.arange(9) % 3)


@pytest.mark.parametrize(
    "settings",
    [
        {"n_candidates": 0},
        {"n_candidates": 2.5},
        {"n_candidates": True},
        {"weight_range": 0.0},
        {"weight_range": float("nan")},
        {"bias_range": -1.0},
        {"bias_range": float("inf")},
        {"batch_size": 0},
        {"engine": "turbo"},
        {"random_state": "seed"},
    ],
)
def test_guess_and_check_bad_settings(settings, small_is2) -> None:
    model = GuessAndCheck(**settings)  # stored unchanged, checked in fit
    assert model.get_params()[next(iter(settings))] is settings[next(iter(settings))]
    with pytest.raises(SettingsError):
        model.fit(*small_is2)


def test_guess_and_check_same_seed_same_weights(small_is2) -> None:
    X, y = small_is2
    first = GuessAndCheck(n_candidates=300, random_state=4).fit(X, y)
    again = GuessAndCheck(n_candidates=300, random_state=4).fit(X, y)
    other = GuessAndCheck(n_candidates=300, random_state=5).fit(X, y)
    for name in GuessAndCheck._state_names:
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.coef_, other.coef_)


def test_guess_and_check_follows_the_binary_contract(is2) -> None:
    X, y, X_test, y_test = is2
    X, y = X[:600], y[:600]
    model = GuessAndCheck(n_candidates=200, random_state=0)
    with pytest.raises(NotFittedError):
        model.predict(X_test)
    assert model.fit(X, y) is model
    predicted = model.predict(X_test)
    assert predicted.dtype == y.dtype
    assert predicted.shape == y_test.shape
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(proba[:, 1] >= 0.5, predicted == 1)
    fresh = GuessAndCheck(**model.get_params()).load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh.predict_proba(X_test), proba)
    assert {a.dtype for a in model.state_dict().values()} <= {
        np.dtype(np.float64),
        np.dtype(np.int64),
    }
    assert not hasattr(clone(model), "classes_")
    assert cross_val_score(GuessAndCheck(n_candidates=50, random_state=0), X, y, cv=3).shape == (3,)
    summary = model.summary()
    assert summary["kind"] == "guess-and-check"
    assert summary["n_parameters"] == 784 + 1  # weights and bias: the search record is stored apart
    assert set(summary["stored"]) == {"best_candidate_", "best_train_accuracy_"}


def test_guess_and_check_beats_the_majority_on_real_digits(is2) -> None:
    X, y, X_test, y_test = is2
    majority = Majority().fit(X, y).score(X_test, y_test)
    model = GuessAndCheck(n_candidates=5000, random_state=0).fit(X, y)
    assert majority == pytest.approx(0.90)
    assert float(model.best_train_accuracy_) > Majority().fit(X, y).score(X, y)
    assert majority < model.score(X_test, y_test) < 0.93  # "about 91%": barely better


# ---------------------------------------------------------------- perceptron


def _separable(n=400, d=12, seed=0, margin=0.05):
    """Points in the unit cube labelled by a random hyperplane, none within ``margin`` of it."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    X = rng.random((3 * n, d)).astype(np.float32)
    distance = (X - 0.5) @ w / np.linalg.norm(w)
    keep = np.abs(distance) > margin
    return X[keep][:n], (distance[keep][:n] > 0).astype(np.int64)


@pytest.mark.parametrize("averaged", [False, True])
def test_perceptron_separates_separable_data(averaged) -> None:
    X, y = _separable()
    model = Perceptron(averaged=averaged, epochs=200, random_state=0).fit(X, y)
    assert model.score(X, y) == 1.0
    assert model.n_iter_ < 200  # stopped once it stopped improving
    if not averaged:
        assert model.history_["mistakes"][-1] == 0  # converged: an epoch without mistakes


@pytest.mark.parametrize("averaged", [False, True])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_perceptron_is_the_textbook_rule(averaged, n_classes) -> None:
    rng = np.random.default_rng(1)
    X = rng.random((60, 7)).astype(np.float32)
    y = rng.integers(0, n_classes, 60)
    outputs = [1] if n_classes == 2 else list(range(n_classes))
    signs = np.where(y[:, None] == np.array(outputs), 1.0, -1.0)
    coef, intercept = plain_perceptron(X, signs, epochs=4, averaged=averaged)
    model = Perceptron(epochs=4, shuffle=False, averaged=averaged, tol=None).fit(X, y)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-12, atol=1e-9)


def test_learning_rate_only_scales_the_weights() -> None:
    X, y = _separable(seed=3, margin=0.0)
    one = Perceptron(lr=1.0, averaged=False, random_state=0).fit(X, y)
    small = Perceptron(lr=0.125, averaged=False, random_state=0).fit(X, y)
    np.testing.assert_allclose(small.coef_, one.coef_ * 0.125)
    np.testing.assert_array_equal(small.predict(X), one.predict(X))


def test_averaging_helps_on_noisy_held_out_data() -> None:
    plain_scores, averaged_scores = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        X = rng.random((1200, 20)).astype(np.float32)
        w = rng.normal(size=20)
        y = ((X - 0.5) @ w > 0).astype(np.int64)
        flip = rng.random(1200) < 0.15  # label noise: no separating line exists
        y[flip] = 1 - y[flip]
        train, test = slice(0, 800), slice(800, None)
        plain = Perceptron(averaged=False, epochs=10, tol=None, random_state=seed).fit(X[train], y[train])
        averaged = Perceptron(averaged=True, epochs=10, tol=None, random_state=seed).fit(X[train], y[train])
        assert not np.allclose(plain.coef_, averaged.coef_)
        plain_scores.append(plain.score(X[test], y[test]))
        averaged_scores.append(averaged.score(X[test], y[test]))
    assert np.mean(averaged_scores) > np.mean(plain_scores) + 0.02
    assert sum(a >= p for a, p in zip(averaged_scores, plain_scores, strict=True)) >= 5


def test_perceptron_on_is_it_a_2(is2) -> None:
    X, y, X_test, y_test = is2
    model = Perceptron(random_state=0).fit(X, y)
    assert model.coef_.shape == (1, 784)
    assert model.intercept_.shape == (1,)
    assert model.score(X_test, y_test) >= 0.975  # about LogisticRegression's 0.977 here
    np.testing.assert_allclose(
        model.binary_decision(X_test[:5]),
        X_test[:5].astype(np.float64) @ model.coef_[0] + model.intercept_[0],
    )


def test_perceptron_one_vs_rest_on_ten_digits(sample) -> None:
    X, y = sample.features("train"), sample.train_labels
    model = Perceptron(random_state=0).fit(X, y)
    assert model.coef_.shape == (10, 784)
    assert model.intercept_.shape == (10,)
    assert model.score(sample.features("test"), sample.test_labels) > 0.88
    with pytest.raises(ValueError, match="two-class"):
        model.binary_decision(X[:2])


def test_perceptron_same_seed_same_weights() -> None:
    X, y = _separable(seed=2, margin=0.0)
    first = Perceptron(random_state=7).fit(X, y)
    again = Perceptron(random_state=7).fit(X, y)
    other = Perceptron(random_state=8).fit(X, y)
    np.testing.assert_array_equal(first.coef_, again.coef_)
    np.testing.assert_array_equal(first.intercept_, again.intercept_)
    assert first.history_ == again.history_
    assert not np.array_equal(first.coef_, other.coef_)


def test_perceptron_reports_every_epoch() -> None:
    X, y = _separable(seed=4)
    reports: list[Progress] = []
    model = Perceptron(epochs=30, random_state=0).fit(X, y, callback=reports.append)
    assert [p.step for p in reports] == list(range(1, model.n_iter_ + 1))
    assert all(p.stage == "epoch" and p.total == 30 for p in reports)
    assert [p.logs["accuracy"] for p in reports] == model.history_["accuracy"]
    assert set(model.history_) == {"mistakes", "errors", "accuracy"}


@pytest.mark.parametrize(
    "settings",
    [
        {"lr": 0.0},
        {"lr": -1.0},
        {"epochs": 0},
        {"n_iter_no_change": 0},
        {"tol": -0.1},
        {"averaged": "yes"},
        {"shuffle": 1},
        {"random_state": 1.5},
    ],
)
def test_perceptron_bad_settings(settings) -> None:
    X, y = _separable(n=20)
    with pytest.raises(SettingsError):
        Perceptron(**settings).fit(X, y)


@pytest.mark.parametrize("cpus", [1, 2, 3])
def test_drawing_on_threads_gives_the_plain_loops_numbers(cpus, monkeypatch) -> None:
    """Candidates drawn in parts on worker threads are the plain loop's, in its order,
    and the generator ends where the plain loop's does."""
    monkeypatch.setattr(guess_and_check_engine, "usable_cores", lambda: cpus)
    data = np.random.default_rng(1)
    X = data.random((40, 7)).astype(np.float32)
    positive = data.random(40) < 0.3
    rng = np.random.default_rng(5)
    with _CandidateScorer(X, positive, 0.5, 20.0) as scorer:
        assert (scorer._pool is not None) == (cpus > 1)
        first = scorer.draw(rng, 5, 0.5, 20.0)  # too few to split
        second = scorer.draw(rng, 1000, 0.5, 20.0)
    plain = np.random.default_rng(5)
    for weights, biases, (w32, b32) in (first, second):  # float32 products: X is no pixels
        for i in range(len(biases)):
            np.testing.assert_array_equal(weights[i], plain.uniform(-0.5, 0.5, 7))
            assert biases[i] == plain.uniform(-20, 20)
        np.testing.assert_array_equal(w32, weights.astype(np.float32))
        np.testing.assert_array_equal(b32, biases.astype(np.float32))
    assert rng.random() == plain.random()


@pytest.mark.parametrize("cpus", [1, 3])
def test_races_split_over_any_number_of_workers_pick_the_plain_loops_candidate(
    small_is2, cpus, monkeypatch, products
) -> None:
    monkeypatch.setattr(guess_and_check_engine, "usable_cores", lambda: cpus)
    monkeypatch.setattr(guess_and_check_engine, "_MIN_TASK", 5)  # several races per chunk
    X, y = small_is2
    reference = plain_guess_and_check(X, y, 300, 7)
    model = GuessAndCheck(n_candidates=300, batch_size=100, random_state=7).fit(X, y)
    assert int(model.best_candidate_) == reference["index"]
    assert list(zip(*model.history_.values(), strict=True)) == reference["history"]
