"""The speed engine behind ``GuessAndCheck``: the plain loop's search, over 100x faster.

:func:`digitlab.models.guess_and_check.guess_and_check_plain` scores every
training row for one candidate at a time. :func:`search` gives the very same
result (same winner, weights and history, bit for bit; the tests check it)
with three changes that only touch the speed:

- **Chunks.** A chunk of candidates is scored by one float32 matrix product.
- **Races.** A candidate whose right answers can no longer beat the best so
  far is dropped part-way through the training set (its errors only grow);
  independent races run on worker threads (the BLAS calls release the GIL).
- **Threads draw too.** The chunk's random numbers are drawn on the worker
  threads, each from a copy of the PCG64 generator advanced past the parts
  before it, so they are the plain loop's numbers in its order.

Why the draws and the pick are the plain loop's, bit for bit (the float32
error bound that decides which rows are rescored in float64):
``docs/design-notes.md``, "Guess-and-check engine".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from digitlab.engines import usable_cores

if TYPE_CHECKING:
    from digitlab.models.guess_and_check import BestSoFar

# float32 unit roundoff: every float32 operation is exact to a relative 2**-24.
_U32 = float(np.finfo(np.float32).eps) / 2
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
    besides a float32 copy of the training rows in visiting order.
    """
    done, size = 0, _FIRST_CHUNK
    with _CandidateScorer(X, positive, weight_range, bias_range) as scorer:
        while done < n_candidates:
            # Chunks grow from small, so a best count to race against comes early.
            k = min(batch_size, size, n_candidates - done)
            size *= 4
            weights, biases, w32 = scorer.draw(rng, k, weight_range, bias_range)
            # Only candidates that may beat the best so far get an exact count.
            contenders, exact = scorer.contenders(weights, biases, bar=best.count, w32=w32)
            for j, count in zip(contenders.tolist(), exact.tolist(), strict=True):
                best.offer(done + j, count, weights[j], biases[j])
            done += k
            best.tried_up_to(done)
    return best


class _CandidateScorer:
    """Exact training counts for chunks of candidates, dropping hopeless ones early.

    For each candidate a training row is *surely right*, *surely wrong* or
    *unsure* (float32 score within ``tol`` of 0). A candidate is dropped as
    soon as its possible right answers (sure plus unsure) plus the rows it has
    not seen cannot exceed the best count so far; only the survivors' unsure
    rows are scored again, in float64.

    To be dropped, a candidate has to collect ``n - best`` sure mistakes, so it
    should meet its mistakes early: a candidate that mostly says the minority
    class's opposite visits the minority rows first, one that mostly says the
    minority class visits the majority rows first (one reordered copy of the
    training set, read from either end). Which kind a candidate is comes from
    a probe of the rows at both ends, which its count includes; that choice
    only changes the speed, never the counts.
    """

    def __init__(self, X: np.ndarray, positive: np.ndarray, weight_range: float, bias_range: float):
        n, d = X.shape
        self.X, self.n = X, n
        self.positive = positive
        self.minority_positive = bool(2 * positive.sum() <= n)
        minority = positive if self.minority_positive else ~positive
        # |float32 score - exact score| <= gamma_(d+2) * (sum |x_k w_k| + |b|) for the
        # product and the bias add, plus 2**-24 relative for rounding w and b to
        # float32; sum |x_k w_k| <= weight_range * |x|_1. Twice that is safely above
        # the float64 loop's own error too.
        m = d + 3
        gamma = m * _U32 / (1 - m * _U32)
        l1 = np.empty(n)
        for start in range(0, n, _MAX_ROWS):  # in blocks: no temporary the size of X
            block = X[start : start + _MAX_ROWS]
            l1[start : start + len(block)] = np.abs(block).sum(axis=1, dtype=np.float64)
        tol64 = 2.0 * gamma * (1 + _U32) * (weight_range * l1 + bias_range) * (1 + 1e-6)
        tol = tol64.astype(np.float32)
        low = tol < tol64
        tol[low] = np.nextafter(tol[low], np.float32(np.inf))
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
        self.ordered_X = X[self.order]
        # Per-row thresholds, shape (rows, 1) to broadcast over candidates. A row of
        # class c is right when its score is >= 0 (c positive) or < 0 (negative):
        #   surely right: score > hi (positive) / score < lo (negative)
        #   maybe right:  score >= lo (positive) / score <= hi (negative)
        self.hi = tol[self.order][:, None]
        self.lo = -self.hi
        # The probe: the first rows from either end, scored for every candidate before
        # its race. They count as visited; a candidate's race then goes on from the
        # end where it made more mistakes (its mistakes are likelier there).
        self.probe_front = min(_PROBE_ROWS, self.n_majority)
        self.probe_back = min(_PROBE_ROWS, n - self.n_majority)
        probe = np.r_[0 : self.probe_front, n - self.probe_back : n]
        self.probe_X = self.ordered_X[probe]  # (probe rows, d), contiguous
        self.probe_rows = self.order[probe]
        self.probe_positive = positive[self.probe_rows][:, None]
        self.probe_lo, self.probe_hi = self.lo[probe], self.hi[probe]
        self.workers = max(1, min(usable_cores(), _MAX_WORKERS))
        self._pool: ThreadPoolExecutor | None = None
        self._stack = ExitStack()

    def __enter__(self) -> _CandidateScorer:
        if self.workers > 1:
            # One BLAS thread per worker: BLAS's own threads would fight ours for
            # the same cores. (scikit-learn's KMeans does the same.)
            self._stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
            self._pool = self._stack.enter_context(ThreadPoolExecutor(self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._stack.close()

    def draw(
        self, rng: np.random.Generator, k: int, weight_range: float, bias_range: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``k`` candidates drawn in the plain loop's order: per candidate, d weights then the bias.

        Returns float64 weights ``(k, d)`` and biases ``(k,)``, and the weights
        in float32. Drawing and scaling are a tenth of the work and would leave
        the other cores idle, so with PCG64 (numpy's default) the candidates are
        split between the worker threads: each part draws from a copy of the
        generator advanced past the parts before it (a double is one 64-bit
        draw), which gives the very numbers of one sequential draw.
        """
        d = self.X.shape[1]
        weights = np.empty((k, d))
        biases = np.empty(k)
        w32 = np.empty((k, d), dtype=np.float32)
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
            w32[a:b] = weights[a:b]

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
        return weights, biases, w32

    def contenders(
        self, weights: np.ndarray, biases: np.ndarray, *, bar: int, w32: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates that may get more than ``bar`` rows right, and their exact counts.

        Parameters
        ----------
        weights : ndarray of shape (k, n_features), float64
        biases : ndarray of shape (k,), float64
        bar : int
            The best count so far (-1 for none).
        w32 : ndarray of shape (k, n_features), float32, optional
            ``weights`` in float32, when the caller has them already.

        Returns
        -------
        positions : ndarray of shape (m,), int64
            Ascending positions in the chunk of every candidate whose count may
            exceed ``bar`` (every candidate whose count does is among them).
        counts : ndarray of shape (m,), int64
            Their exact numbers of right answers.
        """
        if w32 is None:
            w32 = weights.astype(np.float32)  # (k, d): BLAS reads it transposed, no copy
        b32 = biases.astype(np.float32)
        # The probe, (probe rows, k): maybe right / unsure as in _race's blocks.
        scores = self.probe_X @ w32.T + b32
        above, below = scores >= self.probe_lo, scores <= self.probe_hi
        maybe = np.where(self.probe_positive, above, below)
        unsure = above & below
        front = self.probe_front
        front_mistakes = front - maybe[:front].sum(axis=0)
        back_mistakes = self.probe_back - maybe[front:].sum(axis=0)
        from_back = back_mistakes * front > front_mistakes * self.probe_back  # higher rate
        possible = maybe.sum(axis=0)
        minus_unsure = -unsure.sum(axis=0)
        probe_r, probe_c = np.nonzero(unsure)
        # Independent races, on worker threads when there are several cores: each
        # one is a long run of BLAS calls that release the GIL. As few races as the
        # workers allow: a race's last candidates are scored in thin, slow products,
        # and the more candidates a race has, the thicker they are (on 2 cores at load
        # 9, one race per worker took 7% less CPU than two). Pieces of at most a worker's
        # share, largest first, so the pool balances them.
        share = max(_MIN_TASK, -(-len(biases) // self.workers))
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
                w32[part], b32[part], bar, minority_first, possible[part], minus_unsure[part]
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
        # The survivors' unsure rows, scored again the plain loop's way: X in float64 @ w + b >= 0.
        rows, cands = np.concatenate(unsure_rows), np.concatenate(unsure_cands)
        slot = np.full(len(biases), -1, dtype=np.int64)
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
        self, pos: int, size: int, minority_first: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """The ``pos``-th .. ``pos + size``-th rows visited after the probe (cut where the classes meet).

        Rows between the probe's ends are read from the back of ``ordered_X``
        when ``minority_first``, from the front otherwise. Returns ``(X block,
        lo, hi, original row numbers, block is positive)``.
        """
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
            self.lo[a:b],
            self.hi[a:b],
            self.order[a:b],
            self.minority_positive == in_minority,
        )

    def _race(
        self,
        w32: np.ndarray,
        b32: np.ndarray,
        bar: int,
        minority_first: bool,
        possible: np.ndarray,
        minus_unsure: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Visit the rows after the probe with candidates ``w32`` (k, d), ``b32`` (k,), dropping hopeless ones.

        ``possible`` (k,) and ``minus_unsure`` (k,) are the probe's maybe-right and
        minus its unsure counts. Returns the surviving candidates (positions in
        ``b32``), their sure right answers, and the unsure ``(row, candidate)``
        pairs met after the probe.
        """
        alive = np.arange(len(b32))
        possible = possible.astype(np.int64)  # copies: updated in place below
        sure = minus_unsure.astype(np.int64)
        unsure_rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        unsure_cands: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        start = seen = self.probe_front + self.probe_back
        w_alive, b_alive = w32, b32
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
                    w_alive, b_alive = w32[alive], b32[alive]
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
            block, lo, hi, rows, positive = self._block(seen - start, size, minority_first)
            # Into buffers kept across blocks: fresh multi-megabyte temporaries cost
            # page faults on every block.
            cells = len(block) * ka
            if cells > len(buffer):
                buffer = np.empty(cells, dtype=np.float32)
                maybe_buffer, unsure_buffer = np.empty(cells, bool), np.empty(cells, bool)
            scores = np.matmul(block, w_alive.T, out=buffer[:cells].reshape(len(block), ka))
            scores += b_alive
            maybe = maybe_buffer[:cells].reshape(scores.shape)
            unsure = unsure_buffer[:cells].reshape(scores.shape)
            if positive:  # right when the score is >= 0
                np.greater_equal(scores, lo, out=maybe)
                np.less_equal(scores, hi, out=unsure)
            else:
                np.less_equal(scores, hi, out=maybe)
                np.greater_equal(scores, lo, out=unsure)
            unsure &= maybe
            # int32 is enough for one block's rows, and twice as fast to sum into as int64
            possible[:ka] += maybe.view(np.uint8).sum(axis=0, dtype=np.int32)
            if unsure.any():  # rare: a full scan for them costs more than this check
                r, c = np.divmod(np.flatnonzero(unsure), ka)  # faster than a 2-d nonzero
                sure[:ka] -= np.bincount(c, minlength=ka)
                unsure_rows.append(rows[r])
                unsure_cands.append(alive[c])
            seen += len(block)
        # sure holds minus the unsure count so far; the sure right answers are possible - unsure.
        sure[: len(alive)] += possible[: len(alive)]
        return alive, sure[: len(alive)], np.concatenate(unsure_rows), np.concatenate(unsure_cands)


def _pcg64_after(state: dict[str, Any], draws: int) -> np.random.PCG64:
    """A PCG64 in ``state``, advanced as if ``draws`` 64-bit numbers had been drawn."""
    generator = np.random.PCG64()
    generator.state = state  # type: ignore[assignment]  # a plain dict is what numpy takes
    return generator.advance(draws)

