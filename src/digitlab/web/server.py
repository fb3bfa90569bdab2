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


def listen(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (DigitlabError if it cannot be);
    ``shared``: in a port-sharing group (Linux's SO_REUSEPORT) that :func:`run_workers`
    gives each worker a socket of, where the system allows it."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        if not (shared and CAN_SHARE_PORT):
            return socket.create_server((host, port), family=family, backlog=2048)
        # A plain bind first: it fails on a port anyone holds, even another group, so a
        # busy port is still an error (and port 0 picks a free one to share).
        with socket.create_server((host, port), family=family) as probe:
            address = probe.getsockname()
        return socket.create_server(address, family=family, backlog=2048, reuse_port=True)
    except (OSError, OverflowError) as exc:  # busy port, unknown host, port out of range
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DigitlabError(f"cannot listen on {host}:{port}: {reason}") from None


# Linux spreads the connections of a SO_REUSEPORT group over its listening sockets
# (other systems may give them all to one socket).
CAN_SHARE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _is_shared(sock: socket.socket) -> bool:
    return CAN_SHARE_PORT and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def worker_sockets(sock: socket.socket, workers: int) -> list[socket.socket]:
    """``sock`` and, when it is shared, ``workers - 1`` more listening sockets in its group.

    Why: workers sharing one listening socket race to accept, and the first to wake
    takes every connection waiting (asyncio and uvloop accept until none is left). 50
    clients connecting at once all went to one of two workers, and the other idled.
    With a socket each, the kernel spreads new connections over the workers."""
    if not _is_shared(sock):
        return [sock]
    try:
        return [sock, *(socket.create_server(sock.getsockname()[:2], family=sock.family,
                                             backlog=2048, reuse_port=True)
                        for _ in range(workers - 1))]
    except OSError as exc:
        raise DigitlabError(f"cannot listen on {url_of(sock)}: {exc.strerror or exc}") from None


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
    # uvicorn's own supervisor, given our sockets: uvicorn.run would bind its own.
    supervisor = _Workers(config, sockets=worker_sockets(sock, workers), ready=ready)
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
        # uvicorn's, but each worker listening on a socket of its own when there is one
        # each (a worker that replaces one that died listens on them all).
        for i in range(self.processes_num):
            own = [self.sockets[i]] if len(self.sockets) == self.processes_num else self.sockets
            process = Process(self.config, own)
            process.start()
            self.processes.append(process)
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
