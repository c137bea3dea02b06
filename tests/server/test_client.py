"""The async client over the engine thread: streaming events, abort on early exit, stats."""
import asyncio
import time

import pytest

from server import EngineConfig, load_engine_client
from server.protocol import EngineRequest, SamplingParams


@pytest.fixture(scope="module")
def client(tiny_llama_dir):
    c = load_engine_client(EngineConfig(model_id=str(tiny_llama_dir)))
    yield c
    c.shutdown()


async def collect(client, rid, n, stop_after=None):
    events = []
    req = EngineRequest(rid, (1, 5, 6, 7), SamplingParams(max_new_tokens=n, ignore_eos=True))
    async for ev in client.generate(req):
        events.append(ev)
        if stop_after and len(events) == stop_after:
            break
    return events


def test_concurrent_streams_and_early_exit_aborts(client):
    async def main():
        full, *cut = await asyncio.gather(collect(client, "a", 30), *(collect(client, f"c{i}", 200, 3) for i in range(8)))
        assert len(full) == 30 and full[-1].finish_reason.value == "length"
        assert all(len(c) == 3 for c in cut)
        for _ in range(100):  # the engine thread processes the aborts on its next step
            stats = client.stats()
            if stats.num_running == stats.num_waiting == stats.num_blocks_used == 0:
                break
            await asyncio.sleep(0.02)
        assert stats.num_running == stats.num_waiting == stats.num_blocks_used == 0 and stats.alive

    asyncio.run(main())


def test_not_live_delivers_every_event_at_the_end_with_the_first_token_time(client):
    """live=False (non-streaming requests without stop strings): the consumer wakes once, at the last event, and
    gets the same events a live consumer gets; the first carries the engine's time, for time to first token."""
    async def main():
        req = lambda rid: EngineRequest(rid, (1, 5, 6, 7), SamplingParams(max_new_tokens=12))  # noqa: E731
        started = time.monotonic()
        live = [ev async for ev in client.generate(req("live"))]
        quiet = [ev async for ev in client.generate(req("quiet"), live=False)]
        assert [e.token_id for e in quiet] == [e.token_id for e in live] and quiet[-1].finish_reason is not None
        assert started < quiet[0].emitted_at <= time.monotonic()
        assert all(e.emitted_at == 0.0 for e in quiet[1:])

    asyncio.run(main())


def test_run_beside_engine_runs_the_loop_on_this_thread(tiny_llama_dir):
    """The engine loop on the calling (main) thread while the work drives requests from another; the work's result
    comes back and its errors are raised here."""
    import threading

    c = load_engine_client(EngineConfig(model_id=str(tiny_llama_dir)))
    seen = {}

    def work():
        seen["worker"] = threading.current_thread()
        return asyncio.run(collect(c, "beside", 5))

    events = c.run_beside_engine(work)
    assert len(events) == 5 and events[-1].finish_reason is not None
    assert c.engine._thread is threading.current_thread() is not seen["worker"]

    c2 = load_engine_client(EngineConfig(model_id=str(tiny_llama_dir)))
    with pytest.raises(ZeroDivisionError):
        c2.run_beside_engine(lambda: 1 / 0)
