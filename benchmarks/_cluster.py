"""A Dask cluster on 127.0.0.1, started as a user starts one, for the tests and the benchmarks.

``dask scheduler`` and one ``dask worker ADDRESS --nworkers 1 --nthreads 1``
per worker, each a process of its own (its own process group, so a worker and
the nanny that would restart it can be killed together, as a machine that is
lost). ``pythonpath`` is prepended to the workers' PYTHONPATH: they import
digitlab and the task functions by name, as they would on real machines.

Also :func:`busy`, the benchmarks' CPU-bound task: a fixed amount of work,
not a fixed time, so a slower engine shows as a longer run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# A hang guard, not a speed limit: a cluster that is not up by then never will be.
START_SECONDS = 180.0

# Dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536 (its default
# distributed.nanny.pre-spawn-environ), to hand freed memory back to the system. Setting
# it also turns off glibc's adaptive mmap threshold, so every array over 128 KiB is a
# fresh mmap whose pages fault in again: an MLP fit took 2.5x as long as in a local
# process. None unsets it (dask's documented way to drop a pre-spawn variable).
# A worker also wakes its event loop every 20 ms to time it (distributed.admin.tick) and
# samples every thread's stack every 10 ms (its profiler, distributed.worker.profile):
# each wake-up takes the GIL from the run. With the tick at 1 s and the profiler off,
# bench_sweep.py's 24 MLP runs on two workers took 1.06-1.07x the time of two local
# processes, against 1.15-1.18x with Dask's defaults (2-core AMD EPYC, load 1.8-2.0,
# 2026-12-01). The README's `dask worker` line sets the same three.
WORKER_ENVIRON = {
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": '{"MALLOC_TRIM_THRESHOLD_": None}',
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
}


def dask_command(role: str) -> list[str]:
    """``dask scheduler`` / ``dask worker``: the console script beside this Python, else its module."""
    script = Path(sys.executable).with_name("dask")
    if script.exists():
        return [str(script), role]
    return [sys.executable, "-m", f"distributed.cli.dask_{role}"]


class LocalCluster:
    """The processes of a running cluster and a client to watch it (``client``)."""

    def __init__(self, folder: Path, pythonpath: Sequence[str | os.PathLike[str]]) -> None:
        self.folder = folder
        paths = [os.fspath(p) for p in pythonpath]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        # One BLAS thread per worker: each worker is one core's worth, as a local process is.
        # WORKER_ENVIRON: the workers' allocator as a local process has it (README, "Sweeps").
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **WORKER_ENVIRON}
        self.workers: list[subprocess.Popen[bytes]] = []
        scheduler_file = folder / "scheduler.json"
        self.scheduler = self._start("scheduler", [
            "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(scheduler_file)])
        deadline = time.monotonic() + START_SECONDS
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                self.address: str = json.loads(scheduler_file.read_text())["address"]
                break
            self._check_alive(self.scheduler, "scheduler", deadline)
            time.sleep(0.05)
        from distributed import Client

        self.client = Client(self.address, set_as_default=False)

    def _start(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        name = role if role == "scheduler" else f"worker-{len(self.workers)}"
        with (self.folder / f"{name}.log").open("wb") as log:
            return subprocess.Popen([*dask_command(role), *args], stdout=log, stderr=log,
                                    env=self.env, start_new_session=True)

    def _check_alive(self, process: subprocess.Popen[bytes], name: str, deadline: float) -> None:
        log = self.folder / f"{name}.log"
        if process.poll() is not None:
            raise RuntimeError(f"dask {name} exited ({process.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dask {name} did not start in {START_SECONDS:g} s: "
                               f"{log.read_text()[-2000:]}")

    def add_worker(self) -> subprocess.Popen[bytes]:
        """Start one more ``dask worker`` (one process, one thread); returns at once."""
        local = self.folder / f"worker-{len(self.workers)}-space"
        worker = self._start("worker", [
            self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
            "--local-directory", str(local), "--name", f"w{len(self.workers)}"])
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, n: int) -> None:
        """Block until exactly ``n`` workers are connected to the scheduler."""
        deadline = time.monotonic() + START_SECONDS
        while len(self.client.scheduler_info()["workers"]) != n:
            for i, worker in enumerate(self.workers):
                if worker.returncode is None:
                    self._check_alive(worker, f"worker-{i}", deadline)
            time.sleep(0.1)

    def worker_of(self, pid: int) -> subprocess.Popen[bytes]:
        """The ``dask worker`` process whose group holds process ``pid`` (a task's worker)."""
        group = os.getpgid(pid)
        return next(w for w in self.workers if w.pid == group)

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker's whole process group (nanny and worker): a machine lost."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def stop(self) -> None:
        self.client.close()
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def local_cluster(n_workers: int, folder: Path,
                  pythonpath: Sequence[str | os.PathLike[str]] = ()) -> Iterator[LocalCluster]:
    """A scheduler and ``n_workers`` workers, all connected, killed on the way out."""
    cluster = LocalCluster(folder, pythonpath)
    try:
        for _ in range(n_workers):
            cluster.add_worker()
        cluster.wait_for_workers(n_workers)
        yield cluster
    finally:
        cluster.stop()


def busy(work: int) -> dict[str, Any]:
    """``work`` rounds of integer arithmetic in pure Python: one core busy, no I/O."""
    total = 0
    for i in range(work):
        total = (total + i * i) % 1_000_003
    return {"work": work, "total": total, "pid": os.getpid()}
