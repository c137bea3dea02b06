"""Graceful termination's deadline: what in-flight work does when `--graceful-termination-timeout` runs out.

On SIGTERM uvicorn stops accepting connections and waits for in-flight requests; at its timeout it cancels them,
which cuts streams without an error event and non-streaming requests without a body. So the drain ends them first,
shortly before uvicorn would: each stream with one TGI error event, each non-streaming request with a 503 body.

`DRAIN` is process-wide, like the signal that starts it (one server per process; sse_starlette does the same).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

SHUTDOWN_BODY = {"error": "Server is shutting down; the request did not finish", "error_type": "shutdown"}
MARGIN_S = 1.0  # ended this long before uvicorn's own deadline (at most a fifth of the timeout)


class Drain:
    def __init__(self):
        self.begun = False
        self.expired = False
        self._callbacks: set[Callable[[], None]] = set()
        self._waiters: set[asyncio.Future] = set()

    def begin(self, timeout_s: float) -> None:
        """On the event loop: uvicorn got its exit signal and will cancel everything after timeout_s."""
        if self.begun:
            return
        self.begun = True
        margin = min(MARGIN_S, timeout_s / 5)
        asyncio.get_running_loop().call_later(max(timeout_s - margin, 0.0), self._expire)

    def on_expire(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run callback at the deadline; returns the function that unregisters it."""
        self._callbacks.add(callback)
        return lambda: self._callbacks.discard(callback)

    async def wait(self) -> None:
        if self.expired:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)

    def _expire(self) -> None:
        self.expired = True
        for callback in list(self._callbacks):
            callback()
        for future in self._waiters:
            if not future.done():
                future.set_result(None)


DRAIN = Drain()


async def until_drained(events: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """SSE payloads until the drain deadline, then one error event (the inner stream is closed: work aborted)."""
    try:
        while True:
            if not DRAIN.begun:  # the common case: no extra task per event
                try:
                    yield await events.__anext__()
                except StopAsyncIteration:
                    return
                continue
            step = asyncio.ensure_future(events.__anext__())
            deadline = asyncio.ensure_future(DRAIN.wait())
            await asyncio.wait({step, deadline}, return_when=asyncio.FIRST_COMPLETED)
            deadline.cancel()
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                yield {"data": json.dumps(SHUTDOWN_BODY)}
                return
            try:
                yield step.result()
            except StopAsyncIteration:
                return
    finally:
        await events.aclose()
