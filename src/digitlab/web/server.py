"""Run the app with uvicorn on a socket we bind ourselves.

Binding first, before uvicorn starts, lets ``digitlab serve`` turn a busy
port into one clear line and exit code 2 (uvicorn would log and exit 1), and
lets ``--port 0`` pick a free port and still print the real address, which
tests and the load benchmark rely on.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from digitlab.errors import DigitlabError


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
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn raises Ctrl-C again once it has shut down; for a server it is the normal end.
        pass
