"""`grammar` through the HTTP API: /generate and /generate_stream, TGI's 422 messages, and a slow-compiling grammar
that must not hold up the tokens of other running streams (compilation runs off the engine thread)."""
from __future__ import annotations

import json
import re
import threading
import time

import httpx
import jsonschema
import pytest

pytestmark = pytest.mark.timeout(180)

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "unit": {"enum": ["apples", "pears"]}},
          "required": ["answer", "unit"], "additionalProperties": False}
# Slow by construction: nested counted repetitions whose automaton keeps growing (minutes at vocabulary 1k; the
# older `{0,25}...{25}` one compiled in < 1.5 s on a fast machine, which made the test flaky).
SLOW_REGEX = "(?:[a-z]{0,60}[0-9]{0,60}){60}x"


def sampled(seed: int, grammar: dict, max_new_tokens: int = 48) -> dict:
    return {"max_new_tokens": max_new_tokens, "do_sample": True, "seed": seed, "details": True, "grammar": grammar}


def test_json_grammar_on_generate(http):
    done = 0
    for seed in range(8):
        r = http.post("/generate", json={"inputs": "Question: how many?", "parameters": sampled(seed, {
            "type": "json", "value": SCHEMA})})
        assert r.status_code == 200, r.text
        body = r.json()
        if body["details"]["finish_reason"] == "eos_token":
            jsonschema.validate(json.loads(body["generated_text"]), SCHEMA)
            done += 1
    assert done, "no constrained generation ended within 48 tokens"


def test_regex_grammar_on_generate_stream(http):
    pattern = r"[0-9]{1,3} (apples|pears)\."
    for seed in range(4):
        with http.stream("POST", "/generate_stream", json={"inputs": "Answer:", "parameters": sampled(
                seed, {"type": "regex", "value": pattern}, 16)}) as r:
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        final = events[-1]
        text = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
        assert final["generated_text"] == text
        if final["details"]["finish_reason"] == "eos_token":
            assert re.fullmatch(pattern, text), text


@pytest.mark.parametrize("grammar, message", [
    ({"type": "json", "value": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
     "Input validation error: grammar is not valid: "),
    ({"type": "json", "value": "{not json"}, "Input validation error: grammar is not valid: "),
    ({"type": "regex", "value": "(unclosed"}, "Input validation error: grammar is not valid: "),
    ({"type": "yaml", "value": "a: 1"}, "Failed to deserialize the JSON body into the target type: "),
])
def test_invalid_grammars_get_tgi_422(http, grammar, message):
    r = http.post("/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(message), r.json()["error"]


@pytest.mark.parametrize("value", [".{10000}", "(a|b){1,50000}", ".{1000000}"])
def test_absurd_repetition_counts_get_422_at_once(http, value):
    r = http.post("/generate", json={"inputs": "x", "parameters": {"grammar": {"type": "regex", "value": value}}})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("Input validation error: grammar is not valid: it is too large to compile")
    # the server is not busy with it: a small grammar still compiles and generates
    r = http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 4, "grammar": {
        "type": "regex", "value": "[a-c]{2}x"}}})
    assert r.status_code == 200, r.text


def test_any_value_schema_generates_objects(http):
    schema = {"type": "object", "properties": {"data": {}}, "required": ["data"]}
    done = 0
    for seed in range(6):
        r = http.post("/generate", json={"inputs": "Question: data?", "parameters": sampled(seed, {
            "type": "json", "value": schema})})
        assert r.status_code == 200, r.text
        text = r.json()["generated_text"]
        assert text.lstrip().startswith("{"), text
        if r.json()["details"]["finish_reason"] == "eos_token":
            jsonschema.validate(json.loads(text), schema)
            done += 1
    assert done, "no constrained generation ended within 48 tokens"


def test_grammar_support_can_be_disabled(tiny_llama_dir, engine_client):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.router.conftest import LiveServer

    with LiveServer(create_app(engine_client, RouterConfig(disable_grammar_support=True))) as live:
        r = httpx.post(live.url + "/generate", json={"inputs": "x", "parameters": {
            "grammar": {"type": "regex", "value": "a+"}}}, timeout=30)
    assert r.status_code == 422 and r.json()["error"] == "Input validation error: grammar is not supported"


def test_slow_grammar_times_out_without_stalling_other_streams(engine_client, auth_headers):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.router.conftest import LiveServer

    with LiveServer(create_app(engine_client, RouterConfig(grammar_compile_timeout_s=1.5))) as live:
        stamps: list[float] = []
        started = threading.Event()

        def stream():
            body = {"inputs": "Question:", "parameters": {"max_new_tokens": 400, "stop": ["never-matches"]}}
            with httpx.stream("POST", live.url + "/generate_stream", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        stamps.append(time.monotonic())
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(30)
        sent = time.monotonic()
        r = httpx.post(live.url + "/generate", json={"inputs": "x", "parameters": {
            "grammar": {"type": "regex", "value": SLOW_REGEX}}}, timeout=60)
        answered = time.monotonic()
        # the killed build left nothing behind: a small grammar compiles and generates at once
        small = httpx.post(live.url + "/generate", json={"inputs": "x", "parameters": {
            "max_new_tokens": 4, "grammar": {"type": "regex", "value": "[a-c]{2}x"}}}, timeout=60)
        reader.join(120)
    assert small.status_code == 200, small.text
    assert r.status_code == 422 and "took longer than 1.5 s" in r.json()["error"], r.text
    assert answered - sent < 10
    during = [t for t in stamps if sent <= t <= answered]
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert len(during) > 5, "the running stream produced no tokens while the grammar compiled"
    assert max(gaps) < 0.5, f"the stream stalled for {max(gaps):.2f} s during the compile"
