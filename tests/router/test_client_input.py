"""Client input can never cause a 500 or a traceback (issue #15): each input that did, through a real server.

Every response must be a clean 4xx (or 200) with a JSON body, SSE events must be strict JSON (no -Infinity), and the
server must log no error while answering them.
"""
from __future__ import annotations

import json
import logging

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def no_errors_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def post_raw(http, path: str, raw: str, content_type: str = "application/json") -> httpx.Response:
    return http.post(path, content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": content_type})


MASKED = {"max_new_tokens": 4, "do_sample": True, "top_k": 1, "top_n_tokens": 5, "details": True}


def test_masked_out_logprobs_are_null_as_serde_writes_them(http, schemas, no_errors_logged):
    r = http.post("/generate", json={"inputs": "Q", "parameters": MASKED})
    assert r.status_code == 200, r.text
    body = strict_json(r.text)
    schemas.validate(body, "GenerateResponse")
    tops = [t["logprob"] for row in body["details"]["top_tokens"] for t in row]
    assert None in tops  # top_k=1 leaves every other candidate at -inf
    assert all(lp is None or lp <= 0 for lp in tops)


def test_masked_out_logprobs_in_sse_are_valid_json(http, schemas, no_errors_logged):
    r = http.post("/generate_stream", json={"inputs": "Q", "parameters": MASKED})
    assert r.status_code == 200
    events = [strict_json(b[len("data:"):]) for b in r.text.split("\n\n") if b.startswith("data:")]
    assert len(events) == 4 and all("error" not in e for e in events)
    for event in events:
        schemas.validate(event, "StreamResponse")


CHAT = '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,%s}'
TOOLS = '"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]'
BAD = [  # (path, raw body, expected status)
    ("/v1/chat/completions", CHAT % '"repetition_penalty":NaN', 400),
    ("/v1/chat/completions", CHAT % '"repetition_penalty":Infinity', 400),
    ("/v1/chat/completions", CHAT % '"repetition_penalty":-Infinity', 400),
    ("/v1/chat/completions", CHAT % '"repetition_penalty":1e400', 422),
    ("/v1/completions", '{"prompt":"hi","max_tokens":2,"temperature":1e400}', 422),
    ("/generate", '{"inputs":"Q","parameters":{"temperature":1e400}}', 422),
    ("/v1/completions", '{"prompt":"hi","max_tokens":2,"logit_bias":{"\u00b2":1}}', 422),
    ("/v1/chat/completions", CHAT % '"logit_bias":{"\u0663":1}', 422),  # Arabic-Indic digit three
    ("/generate", '{"inputs":"Q","parameters":{"adapter_id":"\\ud800","max_new_tokens":2}}', 400),
    ("/generate", '{"inputs":"a\\udc00b","parameters":{"max_new_tokens":2}}', 400),
    ("/generate", '{"inputs":"Q","parameters":{"stop":["\\ud800"]}}', 400),
    ("/v1/chat/completions", CHAT % (TOOLS + ',"tool_choice":"\\ud800"'), 400),
    ("/v1/chat/completions",
     CHAT % (TOOLS + ',"tool_choice":{"type":"function","function":{"name":"\\ud800"}}'), 400),
    ("/watermark/detect", '{"text":"a\\ud800b"}', 400),
    ("/tokenize", '{"inputs":"a\\ud800b"}', 400),
    ("/generate", "[" * 10000 + "]" * 10000, 400),
    ("/generate", '{"inputs":' + "[" * 10000 + "]" * 10000 + "}", 400),
    ("/v1/chat/completions", '{"messages":' + "[" * 10000 + "]" * 10000 + "}", 400),
    ("/invocations", '{"inputs":"Q","parameters":' + "{\"a\":" * 5000 + "1" + "}" * 5000 + "}", 400),
    ("/generate", '{"inputs":"Q","parameters":{"grammar":{"type":"json","value":' + "[" * 200 + "]" * 200 + "}}}",
     400),
    # strict wire types (#17 item 10): serde refuses these
    ("/generate", '{"inputs":"Q","parameters":{"max_new_tokens":"3"}}', 422),
    ("/generate", '{"inputs":"Q","parameters":{"max_new_tokens":3.0}}', 422),
    ("/generate", '{"inputs":"Q","parameters":{"max_new_tokens":3,"do_sample":"yes"}}', 422),
    ("/generate", '{"inputs":"Q","parameters":{"max_new_tokens":3,"details":1}}', 422),
    ("/", '{"inputs":"Q","stream":"true","parameters":{"max_new_tokens":3}}', 422),
]


@pytest.mark.parametrize("path,raw,status", BAD, ids=[f"{i}-{p}" for i, (p, _, _) in enumerate(BAD)])
def test_bad_input_is_a_clean_client_error(http, path, raw, status, no_errors_logged):
    r = post_raw(http, path, raw)
    assert r.status_code == status, r.text
    body = strict_json(r.text)
    message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert "Traceback" not in message and len(message) < 400


def test_lone_surrogate_error_names_the_problem(http):
    r = post_raw(http, "/generate", '{"inputs":"Q","parameters":{"adapter_id":"\\ud800"}}')
    assert r.json()["error"].startswith("Failed to parse the request body as JSON") and "surrogate" in r.text


def test_valid_surrogate_pairs_and_moderate_nesting_still_work(http):
    r = post_raw(http, "/generate", '{"inputs":"\\ud83d\\ude00 ok","parameters":{"max_new_tokens":1}}')
    assert r.status_code == 200, r.text
    r = http.post("/generate", json={"inputs": "Q", "parameters": {"max_new_tokens": 1, "stop": ["["] * 300}})
    assert r.status_code == 422 and "stop" in r.json()["error"]  # 300 brackets in strings are not nesting


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "text/plain", "application/jsonl"])
def test_non_json_content_types_get_415(http, content_type):
    r = post_raw(http, "/generate", '{"inputs":"Q","parameters":{"max_new_tokens":1}}', content_type)
    assert r.status_code == 415, r.text


def test_json_content_types_axum_accepts(http):
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        r = post_raw(http, "/generate", '{"inputs":"Q","parameters":{"max_new_tokens":1}}', content_type)
        assert r.status_code == 200, (content_type, r.text)


def test_an_unexpected_error_is_one_clean_json_500_with_a_request_id(engine_client, caplog):
    """The last resort: whatever a route raises becomes a JSON 500 without a traceback, logged once with its id."""
    from fastapi import FastAPI

    from router.http import install_error_handlers
    from tests.live_server import LiveServer

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom():
        raise KeyError("internal detail")

    caplog.set_level(logging.INFO)
    with LiveServer(app) as live:
        r = httpx.get(live.url + "/boom", headers={"x-request-id": "req-42"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-42"
    assert r.json() == {"error": "Internal server error (request id req-42)", "error_type": "internal"}
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and "req-42" in errors[0].getMessage()
