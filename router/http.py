"""HTTP plumbing shared by all routes: JSON body parsing with TGI-style error bodies, the payload limit,
and the exception handlers that map every error to `{"error", "error_type"}` (never a 500 traceback).

Bodies are held to what serde_json (TGI) accepts, so that nothing a client sends can reach a 500: no NaN/Infinity
literals, no nesting deeper than 128, no lone UTF-16 surrogates (they cannot be encoded back into a response or
handed to the tokenizer). Anything unexpected still ends as one logged line and a JSON 500 (`LastResort`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import uuid
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from sse_starlette.sse import SendTimeoutError
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from router.errors import RouterError
from router.overload import RETRY_AFTER_S
from router.shutdown import DRAIN, SHUTDOWN_BODY

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("rho_serve.router")
PAYLOAD_MESSAGE = "Failed to buffer the request body: length limit exceeded"
MAX_JSON_DEPTH = 128  # serde_json's recursion limit (TGI)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a \uD800-\uDFFF escape (maybe part of a valid pair)
_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, any surrogate left is a lone one


class BodyError(RouterError):
    """A body that is not JSON (400) or not the expected shape (422)."""


def _pydantic_message(e: PydanticValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)


def is_json_content_type(value: str) -> bool:
    """axum's rule: `application/json` or `application/<x>+json`, parameters ignored (so not x-ndjson)."""
    mime = value.split(";", 1)[0].strip().lower()
    kind, _, subtype = mime.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _syntax_error(message: str) -> BodyError:
    return BodyError(f"Failed to parse the request body as JSON: {message}", 400, "validation")


def _reject_constant(name: str):
    raise _syntax_error(f"`{name}` is not a JSON value")


def decode_json(raw: bytes) -> object:
    """bytes -> JSON value, refusing what serde_json refuses (see the module docstring); BodyError 400."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _syntax_error(str(e)) from None
    except RecursionError:
        raise _syntax_error(f"recursion limit exceeded (nesting deeper than {MAX_JSON_DEPTH})") from None
    # Both scans below are skipped by a cheap look at the bytes for almost every body.
    deep = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    if deep or _SURROGATE_ESCAPE.search(raw):
        _check_tree(value)
    return value


def _check_tree(value: object) -> None:
    """Iterative walk (no recursion): depth <= MAX_JSON_DEPTH and no lone surrogate in any key or string."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise _syntax_error("lone surrogate in a string (not valid Unicode)")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _syntax_error(f"recursion limit exceeded (nesting deeper than {MAX_JSON_DEPTH})")
        items = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in items)
        if isinstance(node, dict):
            stack.extend((key, depth) for key in node)


async def read_json(request: Request) -> object:
    """Read and decode the body; 415 without a JSON content type (axum's rule), 400 on unparseable JSON."""
    if not is_json_content_type(request.headers.get("content-type", "")):
        raise BodyError("Expected request with `Content-Type: application/json`", 415, "validation")
    raw = await request.body()
    if len(raw) > 65536:  # a large body takes milliseconds to decode and check: not on the event loop
        return await asyncio.to_thread(decode_json, raw)
    return decode_json(raw)


def to_model(data: object, model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as e:
        raise BodyError(f"Failed to deserialize the JSON body into the target type: {_pydantic_message(e)}",
                        422, "validation") from None


async def parse_body(request: Request, model: type[M]) -> M:
    return to_model(await read_json(request), model)


class PayloadLimit:
    """ASGI middleware: bodies over `limit` bytes get 413 before any route reads them."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise RouterError(PAYLOAD_MESSAGE, 413, "payload_too_large")
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope, receive, send):
        response = JSONResponse({"error": PAYLOAD_MESSAGE, "error_type": "payload_too_large"}, status_code=413)
        await response(scope, receive, send)


def install_error_handlers(app: FastAPI, on_error=None) -> None:
    @app.exception_handler(RouterError)
    async def _router_error(request: Request, e: RouterError):
        if on_error is not None and e.status != 401:
            on_error(e)
        return e.response(retry_after(e))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, e: RequestValidationError):
        msg = "; ".join(f"{'.'.join(map(str, x.get('loc', ())))}: {x.get('msg')}" for x in e.errors())
        return JSONResponse({"error": f"Failed to deserialize the JSON body into the target type: {msg}",
                             "error_type": "validation"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail), "error_type": "http"}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(PydanticValidationError)
    async def _model_validation(request: Request, e: PydanticValidationError):
        # Client values that passed the wire model but not an internal one (e.g. OpenAI fields mapped onto TGI's
        # parameters): still the client's input, so 422, never a 500.
        error = BodyError(f"Input validation error: {_pydantic_message(e)}", 422, "validation")
        if on_error is not None:
            on_error(error)
        if request.url.path.startswith("/v1/"):
            return JSONResponse({"error": {"message": error.message, "type": "validation", "param": None,
                                           "code": None}, "error_type": "validation"}, status_code=422)
        return error.response()

    # No `Exception` handler here: Starlette would log a traceback and re-raise it to uvicorn (a second one).
    app.add_middleware(LastResort)
    dropped = RouterError("the client disconnected before the response", 499, "dropped")
    app.add_middleware(CancelOnDisconnect, on_drop=(lambda: on_error(dropped)) if on_error is not None else None)


def retry_after(e: RouterError) -> dict | None:
    """429s say when to come back (the same as router.overload's refusals)."""
    return {"Retry-After": str(RETRY_AFTER_S)} if e.status == 429 else None


def finite_or_none(value: float | None) -> float | None:
    """serde_json writes NaN and +-inf as null (TGI); Python's json would write invalid JSON or raise."""
    return value if value is None or math.isfinite(value) else None


class LastResort:
    """ASGI middleware: an exception no handler knew becomes one log line with a request id and a JSON 500.

    The response carries the id (`x-request-id`, the client's if it sent one) and no traceback. If the response had
    already started, the connection is closed after the log line (nothing valid can be sent any more).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return  # the client left while sending its body: nobody to answer, nothing went wrong here
        except SendTimeoutError:  # a stream's reader stopped reading; the stream already released its work
            log.warning("stream cut: the client read nothing for the send timeout (%s %s)", scope.get("method"),
                        scope.get("path"))
            return
        except Exception:  # noqa: BLE001 - the one place that may catch everything
            request_id = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")[:64]
            request_id = request_id or uuid.uuid4().hex
            log.exception("unexpected error, request id %s, %s %s", request_id, scope.get("method"),
                          scope.get("path"))
            if not started:
                response = JSONResponse({"error": f"Internal server error (request id {request_id})",
                                         "error_type": "internal"}, status_code=500,
                                        headers={"x-request-id": request_id})
                await response(scope, receive, send)


class CancelOnDisconnect:
    """ASGI middleware: a client that disconnects before its response started cancels the route at once.

    Non-streaming generation would otherwise run to its last token for nobody. Cancelling the route's task unwinds it
    through its `finally`s: the concurrency permit is released and every engine sequence is aborted (router.infer).
    Once the body is read, one watcher awaits the next ASGI message (uvicorn sends `http.disconnect` when the
    connection drops); the route's own later `receive()` calls (sse_starlette listens too) share that message. After
    the response started, a disconnect is the route's business (streams handle it) and is only passed on.
    """

    def __init__(self, app, on_drop=None):
        self.app, self.on_drop = app, on_drop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = _DisconnectWatch(receive)
        task = asyncio.current_task()

        async def watched_send(message):
            state.started = state.started or message["type"] == "http.response.start"
            await send(message)

        def on_disconnect() -> None:
            if not state.started:
                state.dropped = True
                task.cancel()

        def on_drain_deadline() -> None:  # SIGTERM's deadline (router.shutdown): answer 503 rather than be cut
            if not state.started and not state.dropped:
                state.drained = True
                task.cancel()

        state.on_disconnect = on_disconnect
        unregister = DRAIN.on_expire(on_drain_deadline)
        try:
            await self.app(scope, state.receive, watched_send)
        except asyncio.CancelledError:
            if not (state.dropped or state.drained):
                raise
            task.uncancel()  # ours: the client is gone, or the server is stopping
        finally:
            unregister()
            state.stop()
        if state.drained:
            await JSONResponse(SHUTDOWN_BODY, status_code=503)(scope, state.receive, send)
        if state.dropped and self.on_drop is not None:
            self.on_drop()


class _DisconnectWatch:
    def __init__(self, receive):
        self._receive = receive
        self._watcher: asyncio.Task | None = None
        self.started = False
        self.dropped = False  # the client left before the response started; the route was cancelled for it
        self.drained = False  # the graceful-termination deadline came before the response started
        self.on_disconnect = lambda: None

    async def receive(self):
        if self._watcher is not None:
            return await asyncio.shield(self._watcher)
        message = await self._receive()
        if message["type"] == "http.disconnect":  # gone while sending its body: the route gets ClientDisconnect
            self.dropped = not self.started
        elif not message.get("more_body", False):
            self._watcher = asyncio.create_task(self._watch())
        return message

    async def _watch(self):
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.on_disconnect()
        return message

    def stop(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
