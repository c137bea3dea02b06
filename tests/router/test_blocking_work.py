"""Work that can take long runs off the event loop (issue #15): /tokenize (linear offsets, a size limit),
/watermark/detect, chat templates and large bodies; through a real server."""
from __future__ import annotations

import threading

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


class Recording:
    """Wraps a callable; notes which threads called it."""

    def __init__(self, fn):
        self.fn, self.threads = fn, []

    def __call__(self, *args, **kwargs):
        self.threads.append(threading.current_thread())
        return self.fn(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.fn, name)


@pytest.fixture(scope="module")
def live(engine_client):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.live_server import LiveServer

    app = create_app(engine_client, RouterConfig())
    state = app.state.router
    state.tokenizer = Recording(state.tokenizer)  # /tokenize and /watermark/detect use this one
    with LiveServer(app) as server:
        server.state = state
        yield server


def test_tokenize_byte_offsets_are_right_on_long_multibyte_text(live, tokenizer):
    text = "héllo wörld 数学 x² = 4 " * 2000  # ~46k characters, 2- and 3-byte characters throughout
    r = httpx.post(live.url + "/tokenize", json={"inputs": text}, timeout=60)
    assert r.status_code == 200
    tokens = r.json()
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    expected = [(len(text[:a].encode()), len(text[:b].encode())) for a, b in enc["offset_mapping"]]
    assert [(t["start"], t["stop"]) for t in tokens] == expected
    raw = text.encode()
    assert all(raw[t["start"]:t["stop"]].decode() == t["text"] for t in tokens)


def test_tokenize_refuses_huge_inputs_with_a_clear_message(live):
    r = httpx.post(live.url + "/tokenize", json={"inputs": "a" * 200_001}, timeout=60)
    assert r.status_code == 422
    assert r.json() == {"error": "Input validation error: `inputs` has 200001 characters; /tokenize takes at most "
                                 "200000", "error_type": "validation"}


def test_tokenizer_work_runs_off_the_event_loop(live):
    live.state.tokenizer.threads.clear()
    assert httpx.post(live.url + "/tokenize", json={"inputs": "one two"}, timeout=60).status_code == 200
    assert httpx.post(live.url + "/watermark/detect", json={"text": "one two three"}, timeout=60).status_code == 200
    assert len(live.state.tokenizer.threads) == 2
    assert all(t is not live.thread for t in live.state.tokenizer.threads)


def test_chat_templates_render_off_the_event_loop(live, monkeypatch):
    import router.openai

    spy = Recording(router.openai.chat_prompt)
    monkeypatch.setattr(router.openai, "chat_prompt", spy)
    r = httpx.post(live.url + "/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert spy.threads and all(t is not live.thread for t in spy.threads)


def test_large_bodies_decode_off_the_event_loop(live, monkeypatch):
    import router.http

    spy = Recording(router.http.decode_json)
    monkeypatch.setattr(router.http, "decode_json", spy)
    body = {"inputs": "x", "parameters": {"max_new_tokens": 1, "stop": ["s" * 50] * 3}, "pad": "p" * 100_000}
    r = httpx.post(live.url + "/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert spy.threads and all(t is not live.thread for t in spy.threads)
