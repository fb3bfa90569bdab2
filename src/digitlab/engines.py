"""Where a sweep's runs execute: this machine's cores, or a Dask cluster.

A sweep hands each run to an engine as ``engine.submit(fn, arg)`` and reads
results as they finish with ``engine.as_completed(futures)``; ``fn`` is a
module-level function and ``arg`` plain picklable data, so a run is the same
call in this process, in a local worker process or on a cluster worker. The
engine says where the runs went (``engine.where``) for the results table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from digitlab.errors import SettingsError


class Engine(Protocol):
    """What a sweep needs of whatever runs its runs."""

    where: str  # "local (N processes)" or the cluster's address
    # True when runs go to processes of their own, which then settle before their first
    # run (sweep.settle_worker); an engine without it runs them in the caller's process.
    separate_processes: bool

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, key: str) -> Any:
        """Start ``fn(arg)``; a future with ``.result()`` (raises what ``fn`` raised)."""
        ...

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        """The futures, each as soon as it has finished."""
        ...

    def close(self) -> None:
        """Release workers and connections (running futures are cancelled)."""
        ...


# Python 3.12+ warns when a process running threads forks (numpy's BLAS pool always
# runs some). Filtered only around forks whose children run numpy, Pillow or
# matplotlib code that takes no lock those threads could hold.
FORK_WARNING = r".*multi-threaded, use of fork\(\) may lead to deadlocks"


# The cores this process was given as one of several workers (limit_threads), or None.
_SHARE: int | None = None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (not the machine's total), or
    fewer when it is one of several workers sharing them (:func:`limit_threads`)."""
    import os

    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        cores = max(1, os.cpu_count() or 1)
    return min(cores, _SHARE) if _SHARE else cores


def openmp_wait_policy_for_load() -> None:
    """Let torch's OpenMP threads sleep, not spin, when the cores are already busy.

    PyTorch's CPU build uses GNU OpenMP, whose idle threads spin before they sleep:
    on a free machine that makes each step quicker, but on a busy one the spinning
    threads take the cores from the work. Measured on 2 cores, one epoch of the CNN
    on 5,000 digits: idle, 2.9 s spinning vs 3.8 s passive (per 20,000 digits); at
    load 5, 11.2 s spinning vs 7.8 s passive; at load 12-15 a training step was 20x
    slower spinning. So when the load average is already the core count or more,
    OMP_WAIT_POLICY=PASSIVE is set before torch loads (OpenMP reads it only then).
    The results do not change (the wait policy only changes how threads wait,
    unlike the number of threads); a policy the user set is left alone.
    """
    import os

    if any(name in os.environ for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        return
    try:
        busy = os.getloadavg()[0] >= usable_cores()
    except OSError:  # no load average on this system
        return
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


# Environment variables the BLAS and OpenMP runtimes read when they start (torch reads
# OMP_NUM_THREADS at import); threadpoolctl limits those already loaded.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Make this worker process use at most ``threads`` BLAS/OpenMP/torch threads: N
    processes each running a machine's worth of threads would fight over the cores.

    ``threads`` is also what :func:`usable_cores` answers from now on, so the worker
    keeps to its share elsewhere too: given one core, a run draws its figures itself
    instead of forking a second drawing process (``plots.png_bytes_all``), and
    guess-and-check runs one engine worker.
    """
    import os
    import sys

    from threadpoolctl import threadpool_limits

    global _SHARE
    _SHARE = threads

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)  # stays in force for the life of the process
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def allocator_problem() -> str | None:
    """Why this process's memory allocator slows training down, or None.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting
    any glibc malloc threshold turns off its adaptive mmap threshold, so every
    NumPy array over 128 KiB is a fresh mmap whose pages fault in again: an MLP
    fit took 2.5x as long as in a plain process. A sweep's rows carry this as a
    warning, so a cluster started the default way is not just silently slow.
    """
    import os

    names = [name for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
             if name in os.environ]
    if not names:
        return None
    settings = ", ".join(f"{name}={os.environ[name]}" for name in names)
    return (f"this worker runs with {settings} (a Dask nanny's default), which makes NumPy "
            "training up to 2.5x slower: start workers as the README says "
            "(DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON)")


class _Deferred:
    """A future for one process: the call runs when its result is first asked for, so a
    sweep's progress shows each run as it ends (and Ctrl-C stops between runs)."""

    def __init__(self, fn: Callable[[Any], Any], arg: Any) -> None:
        self.fn, self.arg = fn, arg
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def result(self) -> Any:
        if not self._done:
            try:
                self._value = self.fn(self.arg)
            except Exception as exc:  # kept and raised by result(), as a future does
                self._error = exc
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value


class LocalEngine:
    """Runs on this machine: ``workers`` processes (default: the usable cores) through
    joblib's loky executor, whose workers start fresh (spawn-safe on every platform) and
    are reused between sweeps; ``workers=1`` runs in this process, one run at a time."""

    def __init__(self, workers: int | None = None) -> None:
        from digitlab.errors import SettingsError

        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise SettingsError(f"workers must be an integer >= 1, got {workers!r}")
        cores = usable_cores()
        self.workers = workers or cores
        self.where = f"local ({self.workers} process{'es' if self.workers > 1 else ''})"
        # whether runs go to processes of their own (sweep.settle_worker), not this one
        self.separate_processes = self.workers > 1
        self._executor: Any = None
        self._futures: list[Any] = []
        if self.workers > 1:
            from joblib.externals.loky import get_reusable_executor

            # each worker gets its share of the cores for BLAS and torch (at least one)
            threads = max(1, cores // self.workers)
            self._executor = get_reusable_executor(
                max_workers=self.workers, initializer=limit_threads, initargs=(threads,))

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, key: str) -> Any:
        if self._executor is None:
            return _Deferred(fn, arg)
        future = self._executor.submit(fn, arg)
        self._futures.append(future)
        return future

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        futures = list(futures)
        if self._executor is None:
            for future in futures:
                future.result()
                yield future
            return
        import concurrent.futures

        yield from concurrent.futures.as_completed(futures)

    def close(self) -> None:
        if self._executor is None:
            return
        if not all(future.done() for future in self._futures):
            # an interrupted sweep must not leave runs going in the background
            self._executor.shutdown(wait=True, kill_workers=True)
        # else the idle workers stay for the next sweep (loky's reusable executor ends
        # them after a few idle minutes): starting Python and numpy again costs seconds
        self._executor, self._futures = None, []

class DaskEngine:
    """Runs on a Dask distributed cluster: ``DaskEngine("tcp://HOST:8786")``.

    Connects a :class:`distributed.Client` to a scheduler the user started
    (``dask scheduler``, ``dask worker ADDRESS``); every worker needs digitlab
    installed (``pip install 'digitlab[dask]'``), because a run travels as a
    reference to ``fn`` plus its small ``arg``, not as code. What a run loads
    (data by name or path) must be reachable from every worker.

    A run that was on a worker when the worker died is rerun on another by the
    scheduler itself (a task is given up as ``KilledWorker`` only after it took
    ``distributed.scheduler.allowed-failures`` workers down with it). Runs that
    raise are not retried: ``retries`` defaults to 0, because a run that fails
    on bad settings fails again and a sweep records it as failed instead.

    Parameters
    ----------
    address : str
        The scheduler's address, ``tcp://HOST:8786``.
    timeout : float
        Seconds to keep trying to reach the scheduler before giving up.
    retries : int
        Extra attempts for a run that raised (not needed for lost workers).
    """

    def __init__(self, address: str, *, timeout: float = 10.0, retries: int = 0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise SettingsError("a Dask cluster needs the dask extra: "
                                "pip install 'digitlab[dask]'") from None
        try:
            # set_as_default=False: a library must not become dask's global client behind the
            # user's back (their own dask code would start running on this cluster).
            self._client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, ValueError) as exc:  # refused, timed out, unknown host or scheme
            problem = " ".join(str(exc).split()) or type(exc).__name__
            raise SettingsError(f"no Dask scheduler answers at {address}: {problem}") from None
        self._retries = retries
        self._futures: list[Any] = []
        self.where = str(self._client.scheduler_info().get("address", address))
        self.separate_processes = True  # runs go to the workers (sweep.settle_worker)

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, key: str) -> Any:
        """Start ``fn(arg)`` on a worker; a :class:`distributed.Future`."""
        # pure=False: the same key must not be served from a result computed earlier by
        # another client of the cluster; key names the run in the dashboard and the logs.
        future = self._client.submit(fn, arg, key=key, pure=False, retries=self._retries)
        self._futures.append(future)
        return future

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        """The futures in the order they finish."""
        from distributed import as_completed

        # The client's own event loop: dask's default would look for a global client, and
        # this one is deliberately not set as the default.
        return iter(as_completed(futures, loop=self._client.loop))

    def close(self) -> None:
        """Cancel the runs not yet finished and disconnect. The cluster stays up.

        A run not yet started never starts. One already going on a worker cannot be
        stopped (it runs in a worker's thread) and finishes there, unseen: its run
        folder is written with ``keep_existing`` (:func:`digitlab.sweep.run_one`), so
        a resumed sweep running it again cannot mix the two writers' files.
        """
        pending = [future for future in self._futures if not future.done()]
        if pending:
            self._client.cancel(pending)
        self._futures = []
        self._client.close()
