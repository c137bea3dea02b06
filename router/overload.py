"""The cheap 429: refusing a generation request when no concurrency permit is free, before anything else runs for it.

Under a retry storm most requests are refused, and what a refusal costs is taken from the accepted ones: the event
loop and the engine thread share the GIL and the cores. So `OverloadGate`, an ASGI middleware inside CORS and the
payload limit, answers a gated route when every permit is taken with no body read or parsed, no validation, chat
template or tokenizer, no FastAPI routing or dependency, no task and no log line: it compares one count, checks the API
key on the loop, counts TGI's two counters and sends a pre-encoded response that carries `Retry-After`. TGI too takes
the permit before it validates, so when overloaded a request that is also malformed gets 429, not 400/422.

The gate lets a request through (the route then answers it as before) when a permit is free, when the API key is
missing or wrong (the route's 401 comes first, as in TGI), or for a route whose answer depends on its body (`/`,
`/invocations` and the scoring route stream or not by body; `/vertex` fans out by body). Those routes still refuse in
`Infer.acquire` with the same bodies, at the old cost. A request needing n permits while fewer than n are free also
goes through and is refused there. A gated `/generate_stream` answers 200 with TGI's in-band error event, like its route,
but without `x-compute-characters` (the body that header counts is not read).
"""
from __future__ import annotations

import json

from router.auth import is_authorized
from router.errors import OverloadedError

RETRY_AFTER_S = 1  # every 429's Retry-After (router.http too): about how long a short generation holds its permit


def _encoded(status: int, body: bytes, content_type: bytes, extra: tuple = ()) -> tuple[int, tuple, bytes]:
    headers = ((b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(RETRY_AFTER_S).encode()), *extra)
    return status, headers, body


def _responses(compute_type: str) -> dict[str, tuple[int, tuple, bytes]]:
    """path -> (status, headers, body) of its refusal: the bytes its route would send."""
    error = OverloadedError()
    tgi = json.dumps(error.body(), separators=(",", ":")).encode()
    openai = json.dumps({"error": {"message": error.message, "type": error.error_type, "param": None, "code": None},
                         "error_type": error.error_type}, separators=(",", ":")).encode()
    sse = b"data: " + json.dumps(error.body()).encode() + b"\n\n"  # router.app.run_stream's in-band event
    stream_headers = ((b"cache-control", b"no-store"), (b"x-accel-buffering", b"no"),
                      (b"x-compute-type", compute_type.encode()))
    json_type = b"application/json"
    return {"/generate": _encoded(429, tgi, json_type),
            "/generate_stream": _encoded(200, sse, b"text/event-stream; charset=utf-8", stream_headers),
            "/v1/chat/completions": _encoded(429, openai, json_type),
            "/v1/completions": _encoded(429, openai, json_type)}


class OverloadGate:
    """ASGI middleware: a POST to a gated route with every permit taken is answered here (see the module docstring).

    infer: router.infer.Infer (its `num_in_flight` and `max_concurrent_requests`); metrics: router.metrics.Metrics.
    """

    def __init__(self, app, infer, metrics, api_key: str | None, compute_type: str):
        self.app, self.infer, self.api_key = app, infer, api_key
        self.responses = _responses(compute_type)
        self.request_count = metrics.request_count
        self.overloaded = metrics.request_failure.labels(err="overloaded")  # resolved once, not per refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.infer.num_in_flight < self.infer.max_concurrent_requests \
                or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        response = self.responses.get(scope["path"])
        if response is None or not self._authorized(scope):
            return await self.app(scope, receive, send)
        self.request_count.inc()  # TGI counts a refused request and its failure
        self.overloaded.inc()
        status, headers, body = response
        # Fresh messages each time: middlewares outside (CORS) add headers to the list they are given.
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _authorized(self, scope) -> bool:
        if self.api_key is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                return is_authorized(value.decode("latin-1"), self.api_key)
        return False
