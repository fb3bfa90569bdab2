"""The speed engine behind ``GuessAndCheck``: the plain loop's search, over 100x faster.

:func:`digitlab.models.guess_and_check.guess_and_check_plain` scores every
training row for one candidate at a time. :func:`search` gives the very same
result (same winner, weights and history, bit for bit; the tests check it)
with three changes that only touch the speed:

- **Chunks.** A chunk of candidates is scored by one matrix product: exact
  int8 products for pixel features when torch is there, float32 otherwise
  (:mod:`digitlab.models.guess_and_check_products`).
- **Races.** A candidate whose right answers can no longer beat the best so
  far is dropped part-way through the training set (its errors only grow);
  independent races run on worker threads (the BLAS calls release the GIL).
- **Threads draw too.** The chunk's random numbers are drawn on the worker
  threads, each from a copy of the PCG64 generator advanced past the parts
  before it, so they are the plain loop's numbers in its order.

Why the draws and the pick are the plain loop's, bit for bit (the error
bound that decides which rows are rescored in float64):
``docs/design-notes.md``, "Guess-and-check engine".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.engines import usable_cores
from digitlab.models.guess_and_check_products import Float32Products, PixelProducts

if TYPE_CHECKING:
    from digitlab.models.guess_and_check import BestSoFar

# Rows per matrix product are picked so a block of scores holds
# between _MIN_CELLS and _MAX_CELLS numbers (bounded memory), and within
# _MIN_ROWS .. _MAX_ROWS rows. Small blocks once candidates can be dropped: a
# candidate is read on past its drop point by half a block on average (2**16
# cells of 784 features are ~1 ms of GEMM, against ~50 us of per-block numpy
# calls; on Fashion is-2, 7,684 rows per candidate instead of 8,125 at 2**18).
_MIN_CELLS = 2**16
_MAX_CELLS = 2**21
_MIN_ROWS = 128
_MAX_ROWS = 8192
# The first chunk of candidates is small, so the later ones have a best count to
# race against; chunks then grow fourfold up to batch_size.
_FIRST_CHUNK = 16
_MIN_DRAW = 256  # candidates per thread worth drawing in parallel
# Rows from each end of the visiting order scored for every candidate before its race:
# they choose the end it reads on from (on Fashion is-2, simulated: 6,814 rows per
# candidate against 7,105 + 256 with a 256-row sample choosing it).
_PROBE_ROWS = 128
# Worker threads for the candidate races (at most), and candidates per race (at least).
_MAX_WORKERS = 8
_MIN_TASK = 64


def search(
    X: np.ndarray,
    positive: np.ndarray,
    n_candidates: int,
    *,
    weight_range: float,
    bias_range: float,
    rng: np.random.Generator,
    best: BestSoFar,
    batch_size: int,
) -> BestSoFar:
    """What ``guess_and_check_plain`` does, a chunk of up to ``batch_size`` candidates at a time.

    Memory is about ``batch_size * (n_features + 1) * 20`` bytes for the
    candidates plus 16 MB of scores per core, whatever the training size,
    besides a copy of the training rows in visiting order (float32; int8,
    twice, for pixels).
    """
    done, size = 0, _FIRST_CHUNK
    work = float(len(X)) * n_candidates
    with _CandidateScorer(X, positive, weight_range, bias_range, work=work) as scorer:
        while done < n_candidates:
            # Chunks grow from small, so a best count to race against comes early.
            k = min(batch_size, size, n_candidates - done)
            size *= 4
            weights, biases, encoded = scorer.draw(rng, k, weight_range, bias_range)
            # Only candidates that may beat the best so far get an exact count.
            contenders, exact = scorer.contenders(weights, biases, bar=best.count, encoded=encoded)
            for j, count in zip(contenders.tolist(), exact.tolist(), strict=True):
                best.offer(done + j, count, weights[j], biases[j])
            done += k
            best.tried_up_to(done)
    return best


class _CandidateScorer:
    """Exact training counts for chunks of candidates, dropping hopeless ones early.

    For each candidate a training row is *surely right*, *surely wrong* or
    *unsure* (its score within the row's tolerance of 0). A candidate is
    dropped as soon as its possible right answers (sure plus unsure) plus the
    rows it has not seen cannot exceed the best count so far; only the
    survivors' unsure rows are scored again, in float64. With pixel products a
    chunk races twice: first in the high halves alone (half the work, wider
    tolerances), which drops most candidates, then the rest in full.

    To be dropped, a candidate has to collect ``n - best`` sure mistakes, so it
    should meet its mistakes early: a candidate that mostly says the minority
    class's opposite visits the minority rows first, one that mostly says the
    minority class visits the majority rows first (one reordered copy of the
    training set, read from either end). Which kind a candidate is comes from
    a probe of the rows at both ends, which its count includes; that choice
    only changes the speed, never the counts.
    """

    def __init__(
        self,
        X: np.ndarray,
        positive: np.ndarray,
        weight_range: float,
        bias_range: float,
        *,
        work: float = 0.0,
        products: Float32Products | PixelProducts | None = None,
    ):
        """``work`` (rows x candidates) decides whether importing torch pays; ``products``
        chooses them instead (tests)."""
        n = len(X)
        self.X, self.n = X, n
        self.positive = positive
        self.minority_positive = bool(2 * positive.sum() <= n)
        minority = positive if self.minority_positive else ~positive
        self.workers = max(1, min(usable_cores(), _MAX_WORKERS))
        if products is None:
            products = _choose_products(X, weight_range, bias_range, work, self.workers)
        self.products = products
        l1 = products.l1
        # One contiguous copy of the rows in visiting order: the majority rows, then
        # the minority rows. A candidate that mostly says the minority class reads it
        # from the front (its mistakes are majority rows), one that mostly says the
        # majority class from the back. Within a class, faint rows (small |x|_1) sit
        # at the ends: there the bias alone decides the answer, so they are the
        # likeliest mistakes for either kind of candidate; bright rows, whose answer
        # the weights can flip either way, sit near the class boundary.
        majority_rows, minority_rows = np.flatnonzero(~minority), np.flatnonzero(minority)
        self.order = np.concatenate([
            majority_rows[np.argsort(l1[majority_rows], kind="stable")],
            minority_rows[np.argsort(-l1[minority_rows], kind="stable")],
        ])
        self.n_majority = len(majority_rows)
        self.ordered_X = products.rows(self.order)
        # The probe: the first rows from either end, scored for every candidate before
        # its race. They count as visited; a candidate's race then goes on from the
        # end where it made more mistakes (its mistakes are likelier there).
        self.probe_front = min(_PROBE_ROWS, self.n_majority)
        self.probe_back = min(_PROBE_ROWS, n - self.n_majority)
        probe = np.r_[0 : self.probe_front, n - self.probe_back : n]
        self.probe_rows = self.order[probe]
        self.probe_X = products.rows(self.probe_rows)  # (probe rows, d), contiguous
        self.probe_positive = positive[self.probe_rows][:, None]
        # The exact tier counts; a coarse one (pixel products' high halves: half the
        # work, a wider tolerance) first drops most candidates of a chunk.
        self.exact = _Tier(products, self.order, probe)
        coarse = products.coarse()
        self.coarse = _Tier(coarse, self.order, probe) if coarse is not None else None
        self._pool: ThreadPoolExecutor | None = None
        self._stack = ExitStack()

    def __enter__(self) -> _CandidateScorer:
        if self.workers > 1:
            # One BLAS (or torch) thread per worker: their own threads would fight ours
            # for the same cores. (scikit-learn's KMeans does the same.)
            self._stack.enter_context(self.products.single_threaded())
            self._pool = self._stack.enter_context(ThreadPoolExecutor(self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._stack.close()

    def draw(
        self, rng: np.random.Generator, k: int, weight_range: float, bias_range: float
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``k`` candidates drawn in the plain loop's order: per candidate, d weights then the bias.

        Returns float64 weights ``(k, d)`` and biases ``(k,)``, and the
        candidates in the products' form (weights, offsets). Drawing and
        scaling are a tenth of the work and would leave the other cores idle,
        so with PCG64 (numpy's default) the candidates are split between the
        worker threads: each part draws from a copy of the generator advanced
        past the parts before it (a double is one 64-bit draw), which gives the
        very numbers of one sequential draw.
        """
        d = self.X.shape[1]
        weights = np.empty((k, d))
        biases = np.empty(k)
        encoded = self.products.empty(k)
        parallel = (self._pool is not None and type(rng.bit_generator) is np.random.PCG64
                    and k >= _MIN_DRAW * self.workers)
        bounds = np.linspace(0, k, self.workers + 1 if parallel else 2).astype(np.int64)
        start_state = dict(rng.bit_generator.state)
        generators = (
            [np.random.Generator(_pcg64_after(start_state, int(start) * (d + 1)))
             for start in bounds[:-1]]
            if parallel else [rng]
        )

        def fill(part: int) -> None:
            a, b = bounds[part], bounds[part + 1]
            uniforms = generators[part].random((b - a, d + 1))
            # The plain loop's uniform(low, high): low + (high - low) * u, in float64.
            np.multiply(uniforms[:, :d], weight_range - -weight_range, out=weights[a:b])
            weights[a:b] += -weight_range
            biases[a:b] = -bias_range + (bias_range - -bias_range) * uniforms[:, d]
            w_part = self.products.take(encoded[0], slice(a, b))  # a view
            self.products.candidates(weights[a:b], biases[a:b], w_part, encoded[1][a:b])

        if parallel:
            assert self._pool is not None
            list(self._pool.map(fill, range(len(generators))))
            # Leave the caller's generator where one sequential draw would have.
            end_state = dict(generators[-1].bit_generator.state)
            end_state["has_uint32"] = start_state["has_uint32"]
            end_state["uinteger"] = start_state["uinteger"]
            rng.bit_generator.state = end_state
        else:
            fill(0)
        return weights, biases, encoded

    def contenders(
        self,
        weights: np.ndarray,
        biases: np.ndarray,
        *,
        bar: int,
        encoded: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates that may get more than ``bar`` rows right, and their exact counts.

        Parameters
        ----------
        weights : ndarray of shape (k, n_features), float64
        biases : ndarray of shape (k,), float64
        bar : int
            The best count so far (-1 for none).
        encoded : (weights, offsets) in the products' form, optional
            From :meth:`draw`, when the caller has them already.

        Returns
        -------
        positions : ndarray of shape (m,), int64
            Ascending positions in the chunk of every candidate whose count may
            exceed ``bar`` (every candidate whose count does is among them).
        counts : ndarray of shape (m,), int64
            Their exact numbers of right answers.
        """
        if encoded is None:
            encoded = self.products.empty(len(biases))
            self.products.candidates(weights, biases, *encoded)
        w, offsets = encoded
        chosen = np.arange(len(biases))
        if self.coarse is not None and bar >= 0:  # with no bar yet, nothing can be dropped
            chosen = self._count(self.coarse, w, offsets, bar)[0]
            w, offsets = self.products.take(w, chosen), offsets[chosen]
            weights, biases = weights[chosen], biases[chosen]
        positions, counts = self._count(self.exact, w, offsets, bar, weights, biases)
        return chosen[positions], counts

    def _count(
        self,
        tier: _Tier,
        w: np.ndarray,
        offsets: np.ndarray,
        bar: int,
        weights: np.ndarray | None = None,
        biases: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (positions) that may beat ``bar`` in ``tier``'s products, and their counts.

        The counts are exact when ``weights`` and ``biases`` (float64) are given:
        the unsure rows are scored again in float64. Without them they are the
        counts of rows maybe right.
        """
        k = len(offsets)
        exact = weights is not None and biases is not None
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # The probe, (probe rows, k): maybe right / unsure as in _race's blocks.
        scores = tier.products.scores(
            self.probe_X, w, offsets, np.empty((len(self.probe_rows), k), np.float32)
        )
        above, below = scores >= tier.probe_lo, scores <= tier.probe_hi
        maybe = np.where(self.probe_positive, above, below)
        unsure = above & below
        front = self.probe_front
        front_mistakes = front - maybe[:front].sum(axis=0)
        back_mistakes = self.probe_back - maybe[front:].sum(axis=0)
        from_back = back_mistakes * front > front_mistakes * self.probe_back  # higher rate
        possible = maybe.sum(axis=0)
        minus_unsure = -unsure.sum(axis=0) if exact else np.zeros(k, np.int64)
        probe_r, probe_c = np.nonzero(unsure) if exact else (np.zeros(0, np.int64),) * 2
        # Independent races, on worker threads when there are several cores: each
        # one is a long run of BLAS calls that release the GIL. As few races as the
        # workers allow: a race's last candidates are scored in thin, slow products,
        # and the more candidates a race has, the thicker they are (on 2 cores at load
        # 9, one race per worker took 7% less CPU than two). Pieces of at most a worker's
        # share, largest first, so the pool balances them.
        share = max(_MIN_TASK, -(-k // self.workers))
        tasks = [
            (group[start : start + share], minority_first)
            for group, minority_first in (
                (np.flatnonzero(from_back), True),
                (np.flatnonzero(~from_back), False),
            )
            for start in range(0, len(group), share)
        ]
        tasks.sort(key=lambda task: -len(task[0]))

        def race(task: tuple[np.ndarray, bool]) -> tuple[np.ndarray, ...]:
            part, minority_first = task
            alive, right, rows, cands = self._race(
                tier,
                tier.products.take(w, part),
                offsets[part],
                bar,
                minority_first,
                possible[part],
                minus_unsure[part],
                exact=exact,
            )
            return part[alive], right, rows, part[cands]

        results = (
            list(self._pool.map(race, tasks))
            if self._pool is not None
            else [race(t) for t in tasks]
        )
        positions, sure, unsure_rows, unsure_cands = (
            list(column) for column in zip(*results, strict=True)
        )
        unsure_rows.append(self.probe_rows[probe_r])
        unsure_cands.append(probe_c)
        order = np.argsort(np.concatenate(positions))
        survivors = np.concatenate(positions)[order]
        counts = np.concatenate(sure)[order]
        if weights is None or biases is None:  # not exact: counts of rows maybe right
            return survivors, counts
        # The survivors' unsure rows, scored again the plain loop's way: X in float64 @ w + b >= 0.
        rows, cands = np.concatenate(unsure_rows), np.concatenate(unsure_cands)
        slot = np.full(k, -1, dtype=np.int64)
        slot[survivors] = np.arange(len(survivors))
        keep = slot[cands] >= 0
        rows, cands = rows[keep], cands[keep]
        if len(rows):
            scores = (
                np.einsum("ij,ij->i", self.X[rows].astype(np.float64), weights[cands])
                + biases[cands]
            )
            right = (scores >= 0) == self.positive[rows]
            counts += np.bincount(slot[cands], weights=right, minlength=len(counts)).astype(
                np.int64
            )
        return survivors, counts

    def _block(
        self, pos: int, size: int, minority_first: bool, tier: _Tier | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """The ``pos``-th .. ``pos + size``-th rows visited after the probe (cut where the classes meet).

        Rows between the probe's ends are read from the back of ``ordered_X``
        when ``minority_first``, from the front otherwise. Returns ``(X block,
        lo, hi, original row numbers, block is positive)``, with ``tier``'s
        thresholds (the exact tier's by default).
        """
        tier = self.exact if tier is None else tier
        first, last = self.probe_front, self.n - self.probe_back  # rows first .. last - 1
        if minority_first:
            b = last - pos
            a = max(b - size, self.n_majority if b > self.n_majority else first)
        else:
            a = first + pos
            b = min(a + size, self.n_majority if a < self.n_majority else last)
        in_minority = a >= self.n_majority
        return (
            self.ordered_X[a:b],
            tier.lo[a:b],
            tier.hi[a:b],
            self.order[a:b],
            self.minority_positive == in_minority,
        )

    def _race(
        self,
        tier: _Tier,
        w: np.ndarray,
        offsets: np.ndarray,
        bar: int,
        minority_first: bool,
        possible: np.ndarray,
        minus_unsure: np.ndarray,
        *,
        exact: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Visit the rows after the probe with candidates ``w``, ``offsets`` (k,), dropping hopeless ones.

        ``possible`` (k,) and ``minus_unsure`` (k,) are the probe's maybe-right and
        minus its unsure counts. Returns the surviving candidates (positions in
        ``offsets``), their sure right answers, and the unsure ``(row, candidate)``
        pairs met after the probe; not ``exact``, it keeps no track of unsure rows
        (they count as right, so the counts are of rows maybe right).
        """
        alive = np.arange(len(offsets))
        possible = possible.astype(np.int64)  # copies: updated in place below
        sure = minus_unsure.astype(np.int64)
        unsure_rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        unsure_cands: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        start = seen = self.probe_front + self.probe_back
        w_alive, offsets_alive = w, offsets
        buffer = np.empty(0, dtype=np.float32)
        maybe_buffer = unsure_buffer = np.empty(0, dtype=bool)
        while True:
            ka = len(alive)
            if bar >= 0:  # drop the candidates that cannot beat the bar any more
                keep = possible[:ka] + (self.n - seen) > bar
                if not keep.all():
                    ka = int(keep.sum())
                    alive, possible[:ka], sure[:ka] = (
                        alive[keep],
                        possible[: len(keep)][keep],
                        sure[: len(keep)][keep],
                    )
                    w_alive = tier.products.take(w, alive)
                    offsets_alive = offsets[alive]
            if ka == 0 or seen == self.n:
                break
            # No candidate can be dropped before its sure mistakes reach n - bar, so
            # take the rows up to the earliest possible drop in one product; after
            # that, small blocks while many candidates are alive (each is dropped
            # close to when it must be), larger ones as they thin out.
            size = _MAX_CELLS // ka
            if bar >= 0:
                most_wrong = int(np.max(seen - possible[:ka]))
                size = max(min(self.n - bar - most_wrong, size), _MIN_CELLS // ka)
            size = int(np.clip(size, _MIN_ROWS, _MAX_ROWS))
            block, lo, hi, rows, positive = self._block(seen - start, size, minority_first, tier)
            # Into buffers kept across blocks: fresh multi-megabyte temporaries cost
            # page faults on every block.
            cells = len(block) * ka
            if cells > len(buffer):
                buffer = np.empty(cells, dtype=np.float32)
                maybe_buffer, unsure_buffer = np.empty(cells, bool), np.empty(cells, bool)
            scores = tier.products.scores(
                block, w_alive, offsets_alive, buffer[:cells].reshape(len(block), ka)
            )
            maybe = maybe_buffer[:cells].reshape(scores.shape)
            # right when the score is >= 0 (positive rows), < 0 (negative rows)
            if positive:
                np.greater_equal(scores, lo, out=maybe)
            else:
                np.less_equal(scores, hi, out=maybe)
            # int32 is enough for one block's rows, and twice as fast to sum into as int64
            possible[:ka] += maybe.view(np.uint8).sum(axis=0, dtype=np.int32)
            seen += len(block)
            if not exact:
                continue
            unsure = unsure_buffer[:cells].reshape(scores.shape)
            if positive:
                np.less_equal(scores, hi, out=unsure)
            else:
                np.greater_equal(scores, lo, out=unsure)
            unsure &= maybe
            if unsure.any():  # rare: a full scan for them costs more than this check
                r, c = np.divmod(np.flatnonzero(unsure), ka)  # faster than a 2-d nonzero
                sure[:ka] -= np.bincount(c, minlength=ka)
                unsure_rows.append(rows[r])
                unsure_cands.append(alive[c])
        # sure holds minus the unsure count so far; the sure right answers are possible - unsure.
        sure[: len(alive)] += possible[: len(alive)]
        return alive, sure[: len(alive)], np.concatenate(unsure_rows), np.concatenate(unsure_cands)


def _choose_products(
    X: np.ndarray, weight_range: float, bias_range: float, work: float, workers: int
) -> Float32Products | PixelProducts:
    """Exact int8 products where they apply (pixel features, torch), float32 otherwise."""
    pixels = PixelProducts.for_features(X, weight_range, bias_range, work=work, workers=workers)
    return pixels if pixels is not None else Float32Products(X, weight_range, bias_range)


class _Tier:
    """One kind of products and its per-row thresholds in visiting order.

    Shape (rows, 1), to broadcast over candidates. A row of class c is right
    when its score is >= 0 (c positive) or < 0 (negative):

    - surely right: score > hi (positive) / score < lo (negative)
    - maybe right:  score >= lo (positive) / score <= hi (negative)
    """

    def __init__(self, products: Any, order: np.ndarray, probe: np.ndarray) -> None:
        self.products = products
        self.hi = products.tolerance[order][:, None]
        self.lo = -self.hi
        self.probe_lo, self.probe_hi = self.lo[probe], self.hi[probe]


def _pcg64_after(state: dict[str, Any], draws: int) -> np.random.PCG64:
    """A PCG64 in ``state``, advanced as if ``draws`` 64-bit numbers had been drawn."""
    generator = np.random.PCG64()
    generator.state = state  # type: ignore[assignment]  # a plain dict is what numpy takes
    return generator.advance(draws)

