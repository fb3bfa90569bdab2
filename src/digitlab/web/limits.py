"""A cap on request bodies, enforced while they arrive rather than after.

A declared ``Content-Length`` over the cap is refused before a byte of the
body is read; a chunked body (no length declared) or one that lies about its
length is cut off as soon as the bytes received pass the cap. Either way the
client gets 413 with a JSON error, and the server never holds more than the
cap (plus one network chunk) of one request in memory.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(limit: int) -> str:
    return f"request body larger than the limit of {limit:,} bytes"


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of body per HTTP request."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, {"error": too_large_message(self.max_bytes)})
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route while it reads the body, so the app's own
                    # HTTPException handler answers it, as JSON like every other error.
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # not a number: the server rejects it before we are called
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
