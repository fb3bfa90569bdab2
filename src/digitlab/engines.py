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

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, key: str) -> Any:
        """Start ``fn(arg)``; a future with ``.result()`` (raises what ``fn`` raised)."""
        ...

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        """The futures, each as soon as it has finished."""
        ...

    def close(self) -> None:
        """Release workers and connections (running futures are cancelled)."""
        ...


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
        self.where = str(self._client.scheduler_info().get("address", address))

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, key: str) -> Any:
        """Start ``fn(arg)`` on a worker; a :class:`distributed.Future`."""
        # pure=False: the same key must not be served from a result computed earlier by
        # another client of the cluster; key names the run in the dashboard and the logs.
        return self._client.submit(fn, arg, key=key, pure=False, retries=self._retries)

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        """The futures in the order they finish."""
        from distributed import as_completed

        # The client's own event loop: dask's default would look for a global client, and
        # this one is deliberately not set as the default.
        return iter(as_completed(futures, loop=self._client.loop))

    def close(self) -> None:
        """Disconnect; the scheduler forgets this client's runs. The cluster stays up."""
        self._client.close()
