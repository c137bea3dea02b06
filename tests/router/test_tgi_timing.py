"""TGI's timing and token-budget rules through a real uvicorn server: x-queue-time is queued -> first scheduled and
x-inference-time first scheduled -> end (prefill included), from the engine's own stamp; max_new_tokens above the
budget is served up to max_total_tokens (finish_reason length), as TGI serves it.

The engine here runs one sequence at a time and every step sleeps STEP_S after it ran (a step observer on the
engine thread), so the times have guaranteed lower bounds: no assert depends on how fast this machine is.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.router.conftest import LiveServer

pytestmark = pytest.mark.timeout(300)
STEP_S = 0.25
MAX_TOTAL = 1100  # > 1,024 + a short prompt: TGI's budget rule lets large max_new_tokens through


@pytest.fixture(scope="module")
def slow(make_client):
    from router.app import create_app
    from router.config import RouterConfig

    engine = make_client(max_num_seqs=1)
    gate = {"sleep": 0.0}
    engine.engine.add_step_observer(lambda step: time.sleep(gate["sleep"]))
    with LiveServer(create_app(engine, RouterConfig(max_total_tokens=MAX_TOTAL))) as server:
        server.gate = gate
        yield server
    engine.shutdown()


def _ms(r: httpx.Response, name: str) -> int:
    return int(r.headers[name])


def test_queue_and_inference_times_follow_tgi(slow):
    slow.gate["sleep"] = STEP_S
    try:
        first_token = threading.Event()

        def occupy():  # A: 4 steps; B arrives after A's first token, so waits for A's 3 remaining steps
            body = {"inputs": "A long story", "parameters": {"max_new_tokens": 4, "ignore_eos": True}}
            with httpx.stream("POST", slow.url + "/generate_stream", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        first_token.set()

        a = threading.Thread(target=occupy)
        a.start()
        assert first_token.wait(30)
        b = httpx.post(slow.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 1}},
                       timeout=60)
        a.join(30)
    finally:
        slow.gate["sleep"] = 0.0
    assert b.status_code == 200, b.text
    # B waited in the queue for at least A's last two full steps; its own (prefill) step counts as inference.
    assert _ms(b, "x-queue-time") >= 2 * STEP_S * 1000
    assert _ms(b, "x-inference-time") >= STEP_S * 1000
    parts = sum(_ms(b, h) for h in ("x-validation-time", "x-queue-time", "x-inference-time"))
    assert parts <= _ms(b, "x-total-time") + 3  # each part is rounded down to a millisecond
    assert _ms(b, "x-time-per-token") == _ms(b, "x-inference-time")  # one token
    metrics = httpx.get(slow.url + "/metrics").text
    sums = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
            if line.startswith(("tgi_request_queue_duration_sum", "tgi_request_inference_duration_sum"))}
    assert sums["tgi_request_queue_duration_sum"] >= 2 * STEP_S
    assert sums["tgi_request_inference_duration_sum"] >= 2 * STEP_S  # A's and B's


def test_max_new_tokens_above_the_budget_runs_to_max_total_tokens(slow):
    body = {"inputs": "Count:", "parameters": {"max_new_tokens": 2046, "ignore_eos": True, "details": True}}
    r = httpx.post(slow.url + "/generate", json=body, timeout=240)
    assert r.status_code == 200, r.text
    details = r.json()["details"]
    assert details["finish_reason"] == "length"
    assert int(r.headers["x-prompt-tokens"]) + details["generated_tokens"] == MAX_TOTAL


def test_chat_max_tokens_100000_is_served(slow):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100000}
    r = httpx.post(slow.url + "/v1/chat/completions", json=body, timeout=240)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["total_tokens"] <= MAX_TOTAL


def test_budget_error_names_the_checked_part(slow):
    # Only min(max_new_tokens, 1024) must fit: a 100-token prompt + 1,024 > 1,100 is TGI's 422.
    body = {"inputs": "word " * 100, "parameters": {"max_new_tokens": 5000}}
    r = httpx.post(slow.url + "/generate", json=body, timeout=60)
    assert r.status_code == 422
    assert r.json()["error"].startswith("Input validation error: `inputs` tokens + `max_new_tokens` must be "
                                        f"<= {MAX_TOTAL}. Given: ")
    assert r.json()["error"].endswith(" `inputs` tokens and 1024 `max_new_tokens`")
