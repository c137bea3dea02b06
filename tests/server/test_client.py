"""The async client over the engine thread: streaming events, abort on early exit, stats."""
import asyncio

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
