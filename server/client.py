"""The async bridge between the router's event loop and the engine thread: everything the router asks of the engine.

`generate()` submits a request and yields its `TokenEvent`s as they arrive. The engine thread hands each step's events
over in one `call_soon_threadsafe` call; they are fanned out here to per-request asyncio queues. Leaving the iterator
early (client disconnect, stop sequence, exception) aborts the request in the engine at once. Besides generation the
router gets plain values only (server.protocol): engine info and limits, stats and health, step observers for
metrics, watermark detection. The tokenizer is the one object it shares (it runs tokenization itself).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, TypeVar

from server.protocol import EngineInfo, EngineRequest, EngineStats, StepInfo, TokenEvent, WatermarkDetection

if TYPE_CHECKING:
    from server.engine import Engine

T = TypeVar("T")


class EngineClient:
    def __init__(self, engine: "Engine"):
        self.engine = engine
        self.checkpoint = engine.checkpoint  # for the launcher and benchmarks; the router reads `info`
        self.info: EngineInfo = engine.info()
        self.tokenizer = engine.checkpoint.tokenizer
        self._queues: dict[str, _Inbox] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind to the running loop (rebinding if a new one runs, e.g. across tests) and start the engine thread."""
        self._loop = asyncio.get_running_loop()
        self.engine.start(self._on_events_threadsafe)

    def run_engine(self) -> None:
        """Run the engine's loop on the calling thread (the process's main thread: server.engine.Engine.run says
        why) until `shutdown`; the event loop, bound by `start`, then serves from another thread."""
        self.engine.run(self._on_events_threadsafe)

    def run_beside_engine(self, work: Callable[[], T]) -> T:
        """work() on a new thread (its own asyncio loops, e.g. `asyncio.run(...)` of requests) while the engine's
        loop runs on the calling thread, the main one as rho-serve runs it; returns work's result or raises its
        error. Benchmarks and embedders that drive the engine in-process use this."""
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, work()))
            except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
                outcome.append((False, e))
            finally:
                self.shutdown()

        self.claim_engine_thread()
        worker = threading.Thread(target=run, name="engine-client-work")
        worker.start()
        self.run_engine()
        worker.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def claim_engine_thread(self) -> None:
        """Before `run_engine`, while other threads may already call `start`: keeps them from starting a thread."""
        self.engine.claim_thread()

    def shutdown(self) -> None:
        self.engine.shutdown()

    async def generate(self, request: EngineRequest, live: bool = True) -> AsyncIterator[TokenEvent]:
        """The request's events, in order. live=False: the consumer is woken once, by the last event, and gets them
        all then (a non-streaming request with nothing to watch token by token, such as stop strings): one task
        wake-up per request instead of one per token (a third of the router's cost per token: `rho-bench router`)."""
        await self.start()
        if request.request_id in self._queues:
            raise ValueError(f"duplicate request id {request.request_id}")
        inbox = _Inbox(live)
        self._queues[request.request_id] = inbox
        finished = False
        try:
            self.engine.submit(request)
            while True:
                for event in await inbox.take():
                    finished = event.finish_reason is not None or event.error is not None
                    yield event
                    if finished:
                        return
        finally:
            self._queues.pop(request.request_id, None)
            if not finished:
                self.engine.abort(request.request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def is_healthy(self, wedge_timeout_s: float) -> bool:
        return self.health_problem(wedge_timeout_s) is None

    def health_problem(self, wedge_timeout_s: float) -> str | None:
        """None when healthy: the engine thread is alive, when it has work it finished a step within wedge_timeout_s,
        and the model's last sampled logits were finite (NaN/inf makes it unhealthy until a later step's are not)."""
        stats = self.stats()
        has_work = stats.num_running + stats.num_waiting > 0
        if not stats.alive:
            return "the engine thread has stopped"
        if has_work and stats.seconds_since_last_step > wedge_timeout_s:
            return f"no engine step finished for {stats.seconds_since_last_step:.0f} s"
        if not stats.logits_finite:
            return "the model produced non-finite logits (NaN or inf) in its last step"
        return None

    def add_step_observer(self, observer: Callable[[StepInfo], None]) -> None:
        """observer(StepInfo) after every engine step, called on the engine thread (keep it cheap, thread-safe)."""
        self.engine.add_step_observer(observer)

    def detect_watermark(self, token_ids: list[int]) -> WatermarkDetection:
        """The engine's detector, with the gamma (and delta) it generates with."""
        return self.engine.detect_watermark(token_ids)

    def _on_events_threadsafe(self, events: list[TokenEvent]) -> None:
        # Called on the engine thread: one hop onto the loop per step, not per token.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for event in events:
            inbox = self._queues.get(event.request_id)
            if inbox is not None:  # absent: the consumer already left; its abort is on the way
                inbox.put(event)


class _Inbox:
    """One request's undelivered events; its consumer waits for the next batch (live) or for the last event."""

    def __init__(self, live: bool):
        self.live = live
        self.events: list[TokenEvent] = []
        self.ready = asyncio.Event()

    def put(self, event: TokenEvent) -> None:
        self.events.append(event)
        if self.live or event.finish_reason is not None or event.error is not None:
            self.ready.set()

    async def take(self) -> list[TokenEvent]:
        await self.ready.wait()
        self.ready.clear()
        events, self.events = self.events, []
        return events
