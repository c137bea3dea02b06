"""The cheap 429 (issue #15, router.overload): with every permit taken, a generation request is refused before its body
is read or parsed, with Retry-After, in its route's shape; the API key is still checked first.

Through a real server on loopback whose limit is 2 sequences, its permits held as running requests would hold them.
"""
from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.router.conftest import API_KEY

pytestmark = pytest.mark.timeout(120)
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OVERLOADED = {"error": "Model is overloaded", "error_type": "overloaded"}


@pytest.fixture(scope="module")
def busy(engine_client):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.live_server import LiveServer

    with LiveServer(create_app(engine_client, RouterConfig(max_concurrent_requests=2, api_key=API_KEY))) as live:
        live.infer = live.server.config.app.state.router.infer
        yield live


@pytest.fixture
def held(busy):
    permits = busy.infer.acquire(2)  # the whole budget
    yield busy
    permits.release()


def _failures(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return float(re.search(r'^tgi_request_failure\{err="overloaded"\} (\S+)$', text, re.M).group(1))


def test_a_refusal_does_not_wait_for_the_body(held):
    """Headers announce 1000 bytes that never come: the 429 arrives anyway (the route would wait for the body)."""
    with socket.create_connection(("127.0.0.1", held.port), timeout=20) as s:
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n"
                  b"authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 429 "), head
    assert b"retry-after: 1\r\n" in head.lower(), head


def test_a_refusal_does_not_parse_or_validate_the_body(held):
    before = _failures(held.url)
    with httpx.Client(base_url=held.url, headers=AUTH, timeout=30) as http:
        broken = http.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
        untyped = http.post("/generate", content=b"inputs=x")  # no JSON content type: would be 415
        invalid = http.post("/generate", json={"inputs": "x", "parameters": {"temperature": -1}})  # would be 422
        chat = http.post("/v1/chat/completions", json={"messages": "not a list"})
        stream = http.post("/generate_stream", content=b"[")
    for r in (broken, untyped, invalid):
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
        assert r.json() == OVERLOADED
    assert chat.status_code == 429 and chat.headers["retry-after"] == "1", chat.text
    assert chat.json()["error"] == {"message": "Model is overloaded", "type": "overloaded", "param": None,
                                    "code": None}
    # TGI streams answer 200 and say it in-band, as run_stream does when its permit is refused.
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert json.loads(stream.text.strip().removeprefix("data:")) == OVERLOADED
    assert _failures(held.url) == before + 5  # counted as TGI counts an overloaded request


def test_the_api_key_is_checked_before_the_refusal(held):
    r = httpx.post(held.url + "/generate", json={"inputs": "x"}, timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
    r = httpx.post(held.url + "/generate", json={"inputs": "x"}, headers={"Authorization": "Bearer wrong"},
                   timeout=30)
    assert r.status_code == 401, r.text


def test_with_a_permit_free_the_body_is_read_as_usual(busy):
    with httpx.Client(base_url=busy.url, headers=AUTH, timeout=60) as http:
        broken = http.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
        ok = http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}})
    assert broken.status_code == 400, broken.text
    assert ok.status_code == 200, ok.text
    assert busy.infer.num_in_flight == 0
