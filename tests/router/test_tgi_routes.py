"""TGI behaviour of the OpenAI routes and TGI's extra routes, through a real uvicorn server: x-* headers on
chat/completions, /v1/completions without max_tokens, legacy `function` messages, POST /chat_tokenize and
POST /vertex (shapes from TGI's openapi.json and router/src/vertex.rs)."""
from __future__ import annotations

import httpx
import pytest

from tests.router.conftest import LiveServer

pytestmark = pytest.mark.timeout(180)
GENERATE_HEADERS = ("x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time",
                    "x-queue-time", "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens")
CHAT = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 4, "temperature": 0}


def test_chat_headers_are_generates(http):
    r = http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    for name in GENERATE_HEADERS:
        assert name in r.headers, name
    usage = r.json()["usage"]
    assert int(r.headers["x-prompt-tokens"]) == usage["prompt_tokens"]
    assert int(r.headers["x-generated-tokens"]) == usage["completion_tokens"]
    templated = http.post("/chat_tokenize", json=CHAT).json()["templated_text"]
    assert int(r.headers["x-compute-characters"]) == len(templated)  # TGI counts the templated prompt


def test_completions_headers_are_summed_over_prompts(http):
    prompts = ["One plus one", "Two"]
    r = http.post("/v1/completions", json={"prompt": prompts, "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert int(r.headers["x-prompt-tokens"]) == usage["prompt_tokens"]
    assert int(r.headers["x-generated-tokens"]) == usage["completion_tokens"] == 6
    assert int(r.headers["x-compute-characters"]) == sum(len(p) for p in prompts)
    assert "x-compute-time" not in r.headers  # TGI's summing drops it (a float string does not parse as an int)
    for name in GENERATE_HEADERS[3:]:
        assert name in r.headers, name


@pytest.mark.parametrize("path,body", [("/v1/chat/completions", {**CHAT, "stream": True}),
                                       ("/v1/completions", {"prompt": ["ab", "cde"], "max_tokens": 2,
                                                            "stream": True})])
def test_stream_headers(http, path, body):
    with http.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        text = r.read().decode()
    assert r.headers["x-compute-type"] == "cpu+optimized"
    assert int(r.headers["x-compute-characters"]) > 0
    if path == "/v1/completions":
        assert r.headers["x-compute-characters"] == "5"
    assert "x-queue-time" not in r.headers and text.rstrip().endswith("data: [DONE]")


@pytest.fixture(scope="module")
def small(make_client):
    """max_total_tokens 48: a generation without a limit reaches it quickly."""
    from router.app import create_app
    from router.config import RouterConfig

    engine = make_client()
    with LiveServer(create_app(engine, RouterConfig(max_total_tokens=48))) as live:
        yield live
    engine.shutdown()


def test_completions_without_max_tokens_run_to_the_budget(small, tokenizer):
    no_eos = {str(i): -100 for i in {tokenizer.eos_token_id}}  # keep EOS away: the budget must end it
    r = httpx.post(small.url + "/v1/completions", json={"prompt": "Count:", "temperature": 0, "logit_bias": no_eos},
                   timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 48  # not OpenAI's 16 new tokens


def test_legacy_function_messages_are_accepted(http):
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "Let me check."},
                {"role": "function", "name": "get_weather", "content": "sunny, 21 C"}]
    r = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
    templated = http.post("/chat_tokenize", json={"messages": messages}).json()["templated_text"]
    assert "Tool (get_weather): sunny, 21 C" in templated


def test_chat_tokenize_shape(http, server, schemas, tokenizer):
    r = httpx.post(server.url + "/chat_tokenize", json=CHAT)  # no API key: TGI leaves this route open
    assert r.status_code == 200, r.text
    body = r.json()
    schemas.validate(body, "ChatTokenizeResponse")
    ids = [t["id"] for t in body["tokenize_response"]]
    assert ids == tokenizer(body["templated_text"], add_special_tokens=False)["input_ids"]
    assert body["templated_text"].rstrip().endswith("Assistant:")
    text = body["templated_text"].encode()
    assert all(text[t["start"]:t["stop"]].decode(errors="replace") == t["text"]
               for t in body["tokenize_response"] if t["text"])
    r = httpx.post(server.url + "/chat_tokenize", json={"messages": []})
    assert r.status_code == 422


def test_vertex(http, server):
    instances = [{"inputs": "Hello", "parameters": {"max_new_tokens": 3, "seed": 5}},
                 {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}]
    r = http.post("/vertex", json={"instances": instances})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 2 and all(isinstance(p, str) for p in predictions)
    again = http.post("/vertex", json={"instances": instances[:1]}).json()["predictions"]
    assert again == predictions[:1]  # seeded sampling (TGI: do_sample=true) is reproducible
    r = http.post("/vertex", json={"instances": []})
    assert (r.status_code, r.json()) == (422, {"error": "Input validation error",
                                               "error_type": "Input validation error"})
    r = http.post("/vertex", json={"instances": [{"inputs": "Hi", "parameters": {"max_new_tokens": 0}}]})
    assert (r.status_code, r.json()) == (500, {"error": "Incomplete generation",
                                               "error_type": "Incomplete generation"})
    assert httpx.post(server.url + "/vertex", json={"instances": instances}).status_code == 401  # behind the key
