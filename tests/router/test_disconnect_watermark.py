"""Client disconnects abort engine sequences at once; the watermark is detectable on what we generate."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(180)


def wait_idle(client, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        stats = client.stats()
        if stats.num_running == stats.num_waiting == stats.num_blocks_used == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_fifty_disconnecting_streams_leave_nothing(server, auth_headers, engine_client):
    async def one(client: httpx.AsyncClient, i: int) -> int:
        # ignore_eos: a sampled EOS among the first tokens would end a stream before the client leaves it
        body = {"inputs": f"Stream number {i} says",
                "parameters": {"max_new_tokens": 1900, "do_sample": True, "ignore_eos": True}}
        async with client.stream("POST", "/generate_stream", json=body) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data:")
                if seen == 3:
                    return seen  # leaving the block closes the connection mid-generation

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=server.url, headers=auth_headers, timeout=60, limits=limits) as c:
            return await asyncio.gather(*(one(c, i) for i in range(50)))

    before = engine_client.stats()
    assert asyncio.run(run()) == [3] * 50
    stats = wait_idle(engine_client)
    assert (stats.num_running, stats.num_waiting, stats.num_blocks_used) == (0, 0, 0), stats
    assert stats.alive
    # Aborted, not run to completion: far fewer tokens than the 50 x 1900 asked for were decoded.
    decoded = stats.num_decode_tokens_total - before.num_decode_tokens_total
    assert decoded < 50 * 100, decoded
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    dropped = [line for line in metrics.splitlines() if line.startswith('tgi_request_failure{err="dropped"}')]
    assert dropped and float(dropped[0].split()[-1]) >= 50


def _generated_text(server, auth_headers, watermark: bool, seed: int) -> str:
    body = {"inputs": "Tell me a story:", "parameters": {
        "max_new_tokens": 200, "do_sample": True, "temperature": 1.0, "seed": seed, "watermark": watermark}}
    r = httpx.post(server.url + "/generate", json=body, headers=auth_headers, timeout=120)
    assert r.status_code == 200
    return r.json()["generated_text"]


def _detect(server, auth_headers, text: str) -> dict:
    r = httpx.post(server.url + "/watermark/detect", json={"text": text}, headers=auth_headers, timeout=60)
    assert r.status_code == 200
    return r.json()


def test_watermark_detected_only_when_applied(server, auth_headers):
    marked = _detect(server, auth_headers, _generated_text(server, auth_headers, True, 1))
    plain = _detect(server, auth_headers, _generated_text(server, auth_headers, False, 1))
    assert marked["num_tokens_scored"] >= 150
    assert marked["z_score"] > 4 and marked["watermarked"] and marked["p_value"] < 1e-4
    assert plain["z_score"] < 4 and not plain["watermarked"]
    assert marked["gamma"] == 0.5 and marked["delta"] == 2.0
