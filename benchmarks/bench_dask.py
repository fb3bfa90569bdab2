"""Two Dask workers against two local processes: the cost of running a sweep on a cluster.

Starts its own cluster on 127.0.0.1 as a user starts one (``dask scheduler``
and two ``dask worker --nworkers 1 --nthreads 1``, see ``_cluster.py``) and
runs the same tasks through :class:`digitlab.engines.DaskEngine` and through
a ``concurrent.futures.ProcessPoolExecutor`` of two processes:

1. ``--tasks`` CPU-bound tasks of about ``--seconds`` each (a fixed amount of
   pure-Python arithmetic, calibrated once on this machine): the issue's
   target, two Dask workers within 15% of two local processes, measured on
   work shaped like a sweep's 24 MLP runs.
2. ``--tiny`` empty tasks: the fixed cost per run (submit, schedule, send the
   argument, send the result back), which is what a cluster adds to each run.

    python benchmarks/bench_dask.py            # 24 tasks of ~1 s, 200 empty ones
    python benchmarks/bench_dask.py --quick    # 8 tasks of ~0.3 s, 50 empty ones
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as local_completed
from pathlib import Path
from typing import Any

from _cluster import busy, local_cluster  # benchmarks/ is sys.path[0] when run as a script
from _results import report

from digitlab.engines import DaskEngine

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
TARGET = 1.15  # two Dask workers within 15% of two local processes


def calibrate(seconds: float) -> int:
    """Rounds of :func:`busy` that take about ``seconds`` on one core here."""
    rounds = 2_000_000  # about 0.3 s: long enough that timer and scheduler noise do not count
    started = time.perf_counter()
    busy(rounds)
    took = time.perf_counter() - started
    return max(1, int(rounds * seconds / took))


def timed(run: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    results = run()
    return time.perf_counter() - started, results


def on_dask(engine: DaskEngine, args: list[int], tag: str) -> list[Any]:
    futures = [engine.submit(busy, arg, key=f"{tag}-{i}") for i, arg in enumerate(args)]
    return [future.result() for future in engine.as_completed(futures)]


def on_processes(pool: ProcessPoolExecutor, args: list[int]) -> list[Any]:
    futures = [pool.submit(busy, arg) for arg in args]
    return [future.result() for future in local_completed(futures)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=24, help="CPU-bound tasks (a sweep's runs)")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per task")
    parser.add_argument("--tiny", type=int, default=200, help="empty tasks for the per-task cost")
    parser.add_argument("--quick", action="store_true", help="8 tasks of 0.3 s, 50 empty ones")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seconds, args.tiny = 8, 0.3, 50

    work = calibrate(args.seconds)
    # Local processes first: on a shared machine the load drifts, and the first side timed
    # is the one that gets whatever the machine had to give (here, against the target).
    heavy = [work] * args.tasks
    tiny = [0] * args.tiny
    with ProcessPoolExecutor(2) as pool:
        on_processes(pool, [0, 0])  # start both processes, untimed
        local_heavy, done = timed(lambda: on_processes(pool, heavy))
        assert len(done) == args.tasks
        local_tiny, _ = timed(lambda: on_processes(pool, tiny))
    with tempfile.TemporaryDirectory() as folder, \
            local_cluster(2, Path(folder), pythonpath=[SRC, HERE]) as cluster:
        engine = DaskEngine(cluster.address)
        try:
            on_dask(engine, [0, 0], "warm")  # the workers import the task once, untimed
            dask_heavy, done = timed(lambda: on_dask(engine, heavy, "heavy"))
            assert len(done) == args.tasks
            dask_tiny, _ = timed(lambda: on_dask(engine, tiny, "tiny"))
        finally:
            engine.close()

    ratio = dask_heavy / local_heavy
    per_dask = dask_tiny / args.tiny * 1000
    per_local = local_tiny / args.tiny * 1000
    # Two workers run two tasks at once: the wall time per task is half the cost each adds.
    print(f"{args.tasks} tasks of ~{args.seconds:g} s CPU on 2 workers: Dask {dask_heavy:.2f} s, "
          f"local processes {local_heavy:.2f} s, ratio {ratio:.3f} (target <= {TARGET})")
    print(f"{args.tiny} empty tasks: Dask {per_dask:.2f} ms/task, "
          f"local processes {per_local:.2f} ms/task (wall time per task, 2 workers)")
    report(f"dask: {args.tasks} x {args.seconds:g} s CPU tasks, 2 Dask workers vs 2 local processes",
           digitlab=dask_heavy, reference=local_heavy, unit="s", ratio=ratio,
           target=f"time ratio <= {TARGET}", met=ratio <= TARGET)
    report(f"dask: per-task cost of {args.tiny} empty tasks, 2 Dask workers vs 2 local processes",
           digitlab=per_dask, reference=per_local, unit="ms", ratio=per_dask / per_local,
           target="(measured, no target)", met=True,
           note=f"Dask adds about {per_dask - per_local:.1f} ms of wall time per run on 2 workers")


if __name__ == "__main__":
    main()
