"""SSE keep-alive: a silent stream sends comment lines, so proxies and clients do not time it out."""
import asyncio

import httpx
from fastapi import FastAPI

from router.streaming import sse_response
from tests.live_server import LiveServer


def test_silent_stream_gets_keep_alive_comments():
    app = FastAPI()

    @app.get("/slow")
    async def slow():
        async def events():
            await asyncio.sleep(0.8)  # a long prefill, a compile, a queue: no token for a while
            yield {"data": '{"index":1}'}

        return sse_response(events(), keep_alive_s=0.2)

    with LiveServer(app) as live:
        text = httpx.get(live.url + "/slow", timeout=10).text
    lines = text.splitlines()
    assert lines.count(": keep-alive") >= 2, text
    assert lines.index(": keep-alive") < lines.index('data: {"index":1}')
