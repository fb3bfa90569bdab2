"""Every error the API answers is JSON ``{"error": "..."}`` with a 4xx status that fits.

- :class:`InputError` (ours) carries its own status: 400 for an empty body or
  malformed JSON, 415 for a content type we do not read, 422 for content we
  cannot use.
- :class:`~digitlab.errors.DataError` from decoding or normalising (not an
  image, truncated, a decompression bomb, a blank drawing) is 422.
- Starlette's HTTP errors keep their status (404 unknown route, 405 wrong
  method, 413 body too large, 400 broken multipart) and headers.
- FastAPI's own validation errors become 422 with one line of text.
- Anything else is a bug: 500 with a JSON body that says so, never a trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from digitlab.errors import DataError


class InputError(Exception):
    """A request the API cannot read: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def describe(errors: Sequence[Any], shown: int = 3) -> str:
    """Pydantic's validation errors as one line: where and what, for the first few."""
    parts = []
    for error in errors[:shown]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "; ".join(parts) + more


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` as ``{"error": ...}`` JSON."""

    @app.exception_handler(InputError)
    async def input_error(_request: Request, exc: InputError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(DataError)
    async def data_error(_request: Request, exc: DataError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, describe(exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback; the client learns only that it was our fault.
        return error_response(500, f"internal error ({type(exc).__name__}); please report it")
