"""HTTP plumbing shared by all routes: JSON body parsing with TGI-style error bodies, the payload limit,
and the exception handlers that map every error to `{"error", "error_type"}` (never a 500 traceback).
"""
from __future__ import annotations

import json
import logging
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from router.errors import RouterError

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("rho_serve.router")
PAYLOAD_MESSAGE = "Failed to buffer the request body: length limit exceeded"


class BodyError(RouterError):
    """A body that is not JSON (400) or not the expected shape (422)."""


def _pydantic_message(e: PydanticValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)


async def read_json(request: Request) -> object:
    """Read and decode the body; 415 without a JSON content type (axum's rule), 400 on unparseable JSON."""
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type.lower():
        raise BodyError("Expected request with `Content-Type: application/json`", 415, "validation")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BodyError(f"Failed to parse the request body as JSON: {e}", 400, "validation") from None


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
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, e: RequestValidationError):
        msg = "; ".join(f"{'.'.join(map(str, x.get('loc', ())))}: {x.get('msg')}" for x in e.errors())
        return JSONResponse({"error": f"Failed to deserialize the JSON body into the target type: {msg}",
                             "error_type": "validation"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail), "error_type": "http"}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "Incomplete generation", "error_type": "incomplete_generation"},
                            status_code=500)
