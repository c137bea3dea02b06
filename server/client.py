"""The async bridge between the router's event loop and the engine thread.

`generate()` submits a request and yields its `TokenEvent`s as they arrive. The engine thread hands each step's events
over in one `call_soon_threadsafe` call; they are fanned out here to per-request asyncio queues. Leaving the iterator
early (client disconnect, stop sequence, exception) aborts the request in the engine at once.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from server.protocol import EngineRequest, EngineStats, TokenEvent

if TYPE_CHECKING:
    from server.engine import Engine


class EngineClient:
    def __init__(self, engine: "Engine"):
        self.engine = engine
        self.checkpoint = engine.checkpoint  # tokenizer, HF config, eos ids, model id: read-only for the router
        self._queues: dict[str, asyncio.Queue[TokenEvent]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind to the running loop (rebinding if a new one runs, e.g. across tests) and start the engine thread."""
        self._loop = asyncio.get_running_loop()
        self.engine.start(self._on_events_threadsafe)

    def shutdown(self) -> None:
        self.engine.shutdown()

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenEvent]:
        await self.start()
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        if request.request_id in self._queues:
            raise ValueError(f"duplicate request id {request.request_id}")
        self._queues[request.request_id] = queue
        finished = False
        try:
            self.engine.submit(request)
            while True:
                event = await queue.get()
                finished = event.finish_reason is not None or event.error is not None
                yield event
                if finished:
                    return
        finally:
            self._queues.pop(request.request_id, None)
            if not finished:
                self.engine.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _on_events_threadsafe(self, events: list[TokenEvent]) -> None:
        # Called on the engine thread: one hop onto the loop per step, not per token.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for event in events:
            queue = self._queues.get(event.request_id)
            if queue is not None:  # absent: the consumer already left; its abort is on the way
                queue.put_nowait(event)
