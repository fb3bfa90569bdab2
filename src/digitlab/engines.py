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
