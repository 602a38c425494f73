"""What keeps one request from hurting the others, and every answer in the OpenAI error shape: a body-size
limit (413), the work of a client that went away cancelled, 400/404/405/413/500 as {"error": {...}}."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from eva_jax.serve.schemas import APIError

log = logging.getLogger("eva_jax.serve")
T = TypeVar("T")
ROUTES = "POST /v1/completions, POST /v1/chat/completions, GET /v1/models and GET /health"
CLIENT_CLOSED = 499  # nginx's code for "the client closed the request": logged, never seen by anyone


def _too_large_message(limit: int) -> str:
    return (f"the request body is larger than this server's limit of {limit:,} bytes "
            f"(python -m eva_jax.serve --max-request-bytes)")


class BodyLimit:
    """ASGI middleware: refuses a body over `limit` bytes with 413, by its Content-Length before reading it,
    or (chunked uploads) as soon as the bytes read pass the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = APIError(_too_large_message(self.limit), None, "request_too_large", status=413)
            return await JSONResponse(error.body(), status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # FastAPI passes an HTTPException raised while reading the body on
                raise HTTPException(413, _too_large_message(self.limit))
            return message

        await self.app(scope, counted, send)


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
    """`work`'s result; or, if the client disconnects first, `work` cancelled (its engine requests with it,
    so their pages go back to the pool) and a response nobody will read."""
    task, watch = asyncio.ensure_future(work), asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("%s %s: the client disconnected; its request was cancelled", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED)
    finally:
        watch.cancel()


def _is_field(part: Any) -> bool:
    """Pydantic puts the union member tried (`str`, `list[TextPart]`, `function-after[...]`) into error
    locations; the client knows only the field path."""
    return part != "body" and not (isinstance(part, str) and ("[" in part or part in {"str", "int", "none"}))


def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if _is_field(p)]
    if first.get("type") == "json_invalid":
        message, param = "the request body is not valid JSON", None
    else:
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid value')}"
        param = ".".join(loc) or None
    return JSONResponse(APIError(message, param, first.get("type")).body(), status_code=400)


def _api_error(_: Request, err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    """Starlette's plain-text 404/405 (and FastAPI's 413 and body errors) as OpenAI error bodies."""
    path = request.url.path
    if err.status_code == 404:
        message, code = f"there is no route {path}; this server answers {ROUTES}", "not_found"
    elif err.status_code == 405:
        allowed = {k.lower(): v for k, v in (err.headers or {}).items()}.get("allow", "another method")
        message, code = f"{request.method} is not allowed on {path}; use {allowed}", "method_not_allowed"
    elif err.status_code == 413:
        message, code = str(err.detail), "request_too_large"
    elif err.status_code == 400:  # FastAPI could not decode the body (not UTF-8, say)
        message, code = "the request body could not be read: it must be JSON in UTF-8", None
    else:
        message, code = str(err.detail), None
    kind = "invalid_request_error" if err.status_code < 500 else "server_error"
    body = APIError(message, None, code, err.status_code, kind).body()
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)


def _server_error(request: Request, err: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=err)
    body = APIError(f"internal error: {type(err).__name__}: {err}", None, None, 500, "server_error").body()
    return JSONResponse(body, status_code=500)


def install(app: FastAPI, max_request_bytes: int) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(BodyLimit, limit=max_request_bytes)
