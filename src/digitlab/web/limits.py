"""A cap on request bodies, enforced while they arrive rather than after.

A declared ``Content-Length`` over the cap is refused before a byte of the
body is kept; a chunked body (no length declared) or one that lies about its
length is cut off as soon as the bytes received pass the cap. Either way the
client gets 413 with a JSON error, and the server never holds more than the
cap (plus one network chunk) of one request in memory.

Answering early has a catch. A plain blocking client (``urllib``,
``requests``) sends its whole body before it reads a byte of the answer. If
the server closes the socket while body bytes are still arriving or unread,
the kernel answers them with a reset, and the client sees "connection reset"
or "broken pipe" instead of the 413 (2 to 6 tries in 20 with a 3 MB upload).
uvicorn closes right after a response marked ``connection: close`` (our own,
or because the client asked, as urllib always does), and once the response
is complete it hands the app no more of the body. So before any response of
a request whose body is not all read starts, :class:`BodyLimit` reads the
rest and throws it away, up to :data:`DRAIN_BYTES`; the socket is then closed
with nothing unread and the client reads its answer. This covers every early
answer, not only 413 (a 415 for a picture sent as text/plain, a 404).

Past :data:`DRAIN_BYTES` the answer is sent at once, marked ``connection:
close``; a client still sending may then see a reset rather than the 413.
A declared length over that is answered at once without reading; a client
that sent ``Expect: 100-continue`` is answered before it sends the body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_BYTES = 64_000_000
"""Most bytes of a request body read and thrown away so that the client hears the answer.

The bytes are dropped as they come (one network chunk in memory at a time),
so this bounds the time and traffic spent on a refused upload, not memory;
it is 32 times the default body limit, room for any photo sent by mistake."""

CLOSE = (b"connection", b"close")


def too_large_message(limit: int) -> str:
    return f"request body larger than the limit of {limit:,} bytes"


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of body per HTTP request, and every
    answer heard (the unread rest of a body is drained first, up to :data:`DRAIN_BYTES`)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = RequestBody(scope, receive, self.max_bytes)
        if body.declared is not None and body.declared > self.max_bytes:
            await _send_json(body.answering(send), 413, {"error": too_large_message(self.max_bytes)})
            return
        try:
            await self.app(scope, body.receive, body.answering(send))
        except Exception:
            # A bug's 500 is sent by Starlette's outermost layer, after this one: drain
            # first, so that its client hears that answer too.
            await body.drain()
            raise


class RequestBody:
    """One request's body as the app reads it: counted against the limit, and drained
    (read and dropped) before the answer when the app did not read it all."""

    def __init__(self, scope: Scope, receive: Receive, max_bytes: int) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.declared = _content_length(scope)
        names = {name for name, _ in scope["headers"]}
        # HTTP/1.1: a request with neither a length nor chunked transfer has no body.
        self.ended = self.declared == 0 or (
            self.declared is None and b"transfer-encoding" not in names)
        self.expects_continue = (b"expect", b"100-continue") in (
            (name, value.lower()) for name, value in scope["headers"])
        self.received = 0
        self.asked = False  # receive() called: uvicorn has sent "100 Continue" if it was expected
        self.waiting = False  # a receive() of the app's own is in progress

    async def receive(self) -> Message:
        """The next body message for the app (413 once the bytes pass the limit)."""
        message = await self._next()
        if message["type"] == "http.request" and self.received > self.max_bytes:
            # Raised inside the route while it reads the body, so the app's own
            # HTTPException handler answers it, as JSON like every other error.
            raise HTTPException(413, too_large_message(self.max_bytes))
        return message

    async def _next(self) -> Message:
        self.asked = True
        self.waiting = True
        try:
            message = await self._receive()
        finally:
            self.waiting = False
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.ended = not message.get("more_body", False)
        else:  # http.disconnect: nothing more will come
            self.ended = True
        return message

    async def drain(self) -> bool:
        """Read and drop the rest of the body, up to DRAIN_BYTES: True if it has all come."""
        if self.ended:
            return True
        if self.waiting:
            return False  # the app is reading (a file response listening for a disconnect)
        if self.expects_continue and not self.asked:
            return False  # the client waits for our word before sending: answer, don't invite it
        if self.declared is not None and self.declared - self.received > DRAIN_BYTES:
            return False  # it cannot all be read: no point in reading some
        start = self.received
        while not self.ended and self.received - start <= DRAIN_BYTES:
            await self._next()  # the message is dropped here: memory stays one chunk
        return self.ended

    def answering(self, send: Send) -> Send:
        """``send``, draining the body before the response starts; ``connection: close``
        when it could not be drained, so the server never waits on the rest."""

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and not await self.drain():
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        return answer


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
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
