"""Task functions for tests/test_dask_engine.py, importable by the cluster's workers.

Module-level, so a Dask worker imports them by name (tests/ is on its
PYTHONPATH), as it imports digitlab.sweep.run_one on a real cluster.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from digitlab.errors import DataError


def square(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec["x"]`` squared, and where it ran.

    ``started_in``: a folder where it leaves ``<x>-<pid>`` when it starts (so a
    test sees which worker is running what); ``sleep``: seconds to hold the
    worker after that; ``fail``: raise a DataError instead.
    """
    x = spec["x"]
    if spec.get("started_in"):
        (Path(spec["started_in"]) / f"{x}-{os.getpid()}").touch()
    time.sleep(spec.get("sleep", 0.0))
    if spec.get("fail"):
        raise DataError(f"run-{x}", "failed on purpose")
    return {"x": x, "square": x * x, "pid": os.getpid(), "host": socket.gethostname()}


def environ(name: str) -> str | None:
    """This worker's value of the environment variable ``name`` (None when unset)."""
    return os.environ.get(name)
