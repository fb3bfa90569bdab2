"""Run the app with uvicorn on a socket we bind ourselves.

Binding first, before uvicorn starts, lets ``digitlab serve`` turn a busy
port into one clear line and exit code 2 (uvicorn would log and exit 1), and
lets ``--port 0`` pick a free port and still print the real address, which
tests and the load benchmark rely on.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable
from functools import partial

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

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
    open requests first; a worker that dies is replaced.
    """
    config = uvicorn.Config(partial(_worker_app, factory), factory=True, workers=workers,
                            log_level="warning", access_log=False)
    # uvicorn's own supervisor, given our socket: uvicorn.run would bind its own.
    _Workers(config, sockets=[sock], ready=ready).run()


class _Workers(Multiprocess):
    """uvicorn's supervisor, telling when its workers have started."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket],
                 ready: Callable[[], object]) -> None:
        super().__init__(config, sockets)
        self.ready = ready

    def init_processes(self) -> None:
        super().init_processes()
        for process in self.processes:
            # A worker that fails to start ends the wait; the supervisor then stops.
            # (uvicorn before 0.5x has no readiness check: ready at once, as with one worker.)
            if hasattr(process, "wait_until_ready"):
                process.wait_until_ready(WORKER_START_SECONDS, self.should_exit)
        self.ready()


WORKER_START_SECONDS = 300.0  # importing and loading a model on a busy machine: generous


def _worker_app(factory: Callable[[], FastAPI]) -> FastAPI:
    """``factory()`` inside a worker process, with that process held to one BLAS thread."""
    limit_threads(1)  # N workers on N cores: BLAS threads would only fight them
    with warnings.catch_warnings():
        # The parent loaded the model first and showed its warnings once, not once per worker.
        warnings.simplefilter("ignore", DataWarning)
        return factory()
