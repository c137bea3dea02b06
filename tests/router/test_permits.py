"""Concurrency permits bound engine work (issue #15): one permit per engine sequence, taken once, before the response.

Through a real server whose limit is 2 sequences (--max-concurrent-requests 2).
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.router.test_disconnect_watermark import wait_idle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def small(engine_client):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.live_server import LiveServer

    with LiveServer(create_app(engine_client, RouterConfig(max_concurrent_requests=2))) as live:
        live.infer = live.server.config.app.state.router.infer
        yield live


CHAT = {"messages": [{"role": "user", "content": "count"}], "max_tokens": 1800, "stream": True,
        "logit_bias": {"2": -100}}  # never EOS (id 2): the stream runs its 1800 tokens


def test_a_request_over_the_budget_gets_422_one_within_gets_200(small):
    r = httpx.post(small.url + "/v1/completions", json={"prompt": ["a", "b"], "n": 2, "max_tokens": 1}, timeout=30)
    assert r.status_code == 422 and "4 sequences" in r.text and "limit of 2" in r.text, r.text
    r = httpx.post(small.url + "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 1}, timeout=30)
    assert r.status_code == 200, r.text
    assert small.infer.num_in_flight == 0


def test_a_stream_holds_one_permit_per_choice_from_before_its_first_byte(small, engine_client):
    with httpx.Client(base_url=small.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json={**CHAT, "n": 2}) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert json.loads(first[5:])["choices"][0]["delta"]["role"] == "assistant"
            assert small.infer.num_in_flight == 2  # both choices' permits, taken before the 200
            r = http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}})
            assert r.status_code == 429
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:") and line != "data: [DONE]"]
    assert not [e for e in events if "error" in e], events  # an accepted stream never fails with `overloaded`
    wait_idle(engine_client)
    assert small.infer.num_in_flight == 0


def test_best_of_takes_a_permit_per_sequence(small):
    body = {"inputs": "x", "parameters": {"max_new_tokens": 1, "best_of": 2, "do_sample": True}}
    held = small.infer.acquire(1)  # one of the 2 permits, as a running request would hold it (no race with its end)
    try:
        with httpx.Client(base_url=small.url, timeout=60) as http:
            r = http.post("/generate", json=body)  # needs 2, one is taken
    finally:
        held.release()
    assert r.status_code == 429, r.text
    assert httpx.post(small.url + "/generate", json=body, timeout=60).status_code == 200
    assert small.infer.num_in_flight == 0


def test_a_stream_whose_client_left_before_reading_releases_its_permits(small, engine_client):
    import socket

    for _ in range(3):
        payload = json.dumps({**CHAT, "n": 2}).encode()
        with socket.create_connection(("127.0.0.1", small.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    stats = wait_idle(engine_client)
    deadline = time.monotonic() + 30
    while small.infer.num_in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert small.infer.num_in_flight == 0 and stats.num_running == 0
    r = httpx.post(small.url + "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 1}, timeout=30)
    assert r.status_code == 200, r.text


def test_429_says_when_to_retry(small):
    held = small.infer.acquire(2)  # the whole budget, as running requests would hold it
    try:
        with httpx.Client(base_url=small.url, timeout=60) as http:
            tgi = http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}})
            chat = http.post("/v1/chat/completions", json={**CHAT, "stream": False, "max_tokens": 1})
    finally:
        held.release()
    for r in (tgi, chat):
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
    assert tgi.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
