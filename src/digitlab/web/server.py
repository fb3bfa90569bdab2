"""Run the app with uvicorn on a socket we bind ourselves.

Binding first, before uvicorn starts, lets ``digitlab serve`` turn a busy
port into one clear line and exit code 2 (uvicorn would log and exit 1), and
lets ``--port 0`` pick a free port and still print the real address, which
tests and the load benchmark rely on.
"""

from __future__ import annotations

import multiprocessing
import socket
import sys
import warnings
from collections.abc import Callable
from functools import partial
from multiprocessing.queues import SimpleQueue

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from digitlab.engines import limit_threads
from digitlab.errors import DataWarning, DigitlabError


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (DigitlabError if it cannot be)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except (OSError, OverflowError) as exc:  # busy port, unknown host, port out of range
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DigitlabError(f"cannot listen on {host}:{port}: {reason}") from None


def url_of(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C or SIGTERM (uvicorn finishes open requests first)."""
    # One BLAS thread: a request's products are small, and BLAS threads spinning for
    # them fought the request threads (a 280x280 drawing's crop-and-scale took 35 ms
    # with two BLAS threads on a busy 2-core machine, 0.25 ms with one).
    limit_threads(1)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn raises Ctrl-C again once it has shut down; for a server it is the normal end.
        pass


def run_workers(
    factory: Callable[[], FastAPI], sock: socket.socket, workers: int,
    ready: Callable[[], object] = lambda: None,
) -> None:
    """Serve on ``sock`` from ``workers`` processes, each calling ``factory()`` once (so
    each loads the model once) and accepting connections from the one shared socket;
    ``ready()`` is called once every worker has its app (a first request is not left
    waiting for the workers' imports and model loading).

    Python runs one request's CPU work at a time per process (the GIL), so several
    processes are what uses several cores. ``factory`` must be picklable (a
    module-level function or a ``functools.partial`` of one): the workers are
    spawned, not forked. Ctrl-C or SIGTERM stops them all, each finishing its
    open requests first; a worker that dies once serving is replaced. A worker that
    cannot start (its ``factory()`` raised DigitlabError, say the model file is gone)
    stops them all, and this raises its DigitlabError: ``ready()`` is not called.
    """
    if not hasattr(Process, "wait_until_ready"):
        # Without it the supervisor cannot tell "started" from "starting": we would
        # announce a server whose workers may never come up.
        raise DigitlabError(f"serve --workers needs uvicorn {UVICORN_FLOOR} or newer (this is "
                            f"{uvicorn.__version__}): pip install 'uvicorn>={UVICORN_FLOOR}'")
    # The workers are spawned: a queue passed to them at their start is how a worker's
    # reason for not starting reaches this process, to be told as one line.
    failures = multiprocessing.get_context("spawn").SimpleQueue()
    config = uvicorn.Config(partial(_worker_app, factory, failures), factory=True,
                            workers=workers, log_level="warning", access_log=False)
    # uvicorn's own supervisor, given our socket: uvicorn.run would bind its own.
    supervisor = _Workers(config, sockets=[sock], ready=ready)
    supervisor.run()
    if supervisor.failed:
        reason = failures.get() if not failures.empty() else (
            f"it stopped or did not answer within {WORKER_START_SECONDS:.0f} s")
        raise DigitlabError(f"a serve worker could not start: {reason}")


class _Workers(Multiprocess):
    """uvicorn's supervisor, telling when its workers have started."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket],
                 ready: Callable[[], object]) -> None:
        super().__init__(config, sockets)
        self.ready = ready
        self.failed = False  # a worker died or hung before it started serving

    def init_processes(self) -> None:
        super().init_processes()
        for process in self.processes:
            if not process.wait_until_ready(WORKER_START_SECONDS, self.should_exit):
                if not self.should_exit.is_set():  # not Ctrl-C while waiting: it failed
                    self.failed = True
                    self.should_exit.set()  # the supervisor's loop ends and stops the others
                return  # not ready: nothing is announced
        self.ready()


WORKER_START_SECONDS = 300.0  # importing and loading a model on a busy machine: generous

UVICORN_FLOOR = "0.54"  # Process.wait_until_ready; the web extra's floor (a test checks)


def _worker_app(factory: Callable[[], FastAPI], failures: SimpleQueue[str]) -> FastAPI:
    """``factory()`` inside a worker process, with that process held to one BLAS thread;
    a DigitlabError is put on ``failures`` and ends the worker as a startup failure."""
    limit_threads(1)  # N workers on N cores: BLAS threads would only fight them
    try:
        with warnings.catch_warnings():
            # The parent loaded the model first and showed its warnings once, not once per worker.
            warnings.simplefilter("ignore", DataWarning)
            return factory()
    except DigitlabError as exc:
        failures.put(str(exc))
        # uvicorn's code for "could not start": its supervisor does not restart such a worker.
        sys.exit(STARTUP_FAILURE)
