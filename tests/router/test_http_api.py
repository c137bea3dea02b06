"""The TGI routes through a real uvicorn server: shapes (openapi.json), headers, auth, errors, metrics."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            events.append(json.loads(block[len("data: "):]))
    return events


FULL = {"max_new_tokens": 6, "details": True, "decoder_input_details": True, "top_n_tokens": 3, "seed": 7,
        "do_sample": True, "temperature": 0.8, "stop": ["zzz"]}


def test_generate_body_headers_and_schema(http, schemas):
    r = http.post("/generate", json={"inputs": "The answer is", "parameters": FULL})
    assert r.status_code == 200, r.text
    body = r.json()
    schemas.validate(body, "GenerateResponse")
    details = body["details"]
    assert details["generated_tokens"] == 6 and details["finish_reason"] == "length" and details["seed"] == 7
    assert len(details["tokens"]) == 6 and len(details["top_tokens"]) == 6
    assert all(1 <= len(row) <= 3 + 2 for row in details["top_tokens"])  # ties may add a few (TGI)
    assert details["prefill"][0]["logprob"] is None and all(p["logprob"] < 0 for p in details["prefill"][1:])
    assert "".join(t["text"] for t in details["tokens"] if not t["special"]) == body["generated_text"]
    for name in ("x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time",
                 "x-queue-time", "x-inference-time", "x-time-per-token"):
        assert name in r.headers
    assert r.headers["x-generated-tokens"] == "6"
    assert int(r.headers["x-prompt-tokens"]) == len(details["prefill"])
    assert r.headers["x-compute-characters"] == str(len("The answer is"))
    assert r.headers["x-compute-type"] == "cpu+optimized"


def test_same_seed_same_text_and_default_params_sample(http):
    a = http.post("/generate", json={"inputs": "Hi", "parameters": {"seed": 3, "do_sample": True, "max_new_tokens": 8}})
    b = http.post("/generate", json={"inputs": "Hi", "parameters": {"seed": 3, "do_sample": True, "max_new_tokens": 8}})
    assert a.json() == b.json()
    greedy = http.post("/generate", json={"inputs": "Hi", "parameters": {"details": True, "max_new_tokens": 3}})
    assert greedy.json()["details"]["seed"] is None  # greedy: no seed
    sampled = http.post("/generate", json={"inputs": "Hi", "parameters": {"details": True, "max_new_tokens": 3,
                                                                         "do_sample": True}})
    assert isinstance(sampled.json()["details"]["seed"], int)  # sampling without a seed draws one and reports it


def test_stream_events_validate_and_match_generate(http, schemas):
    params = {"max_new_tokens": 8, "details": True, "top_n_tokens": 2, "seed": 11, "do_sample": True}
    r = http.post("/generate_stream", json={"inputs": "Count: 1 2 3", "parameters": params})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-accel-buffering"] == "no"
    assert "data: {" in r.text and "[DONE]" not in r.text
    events = sse_events(r.text)
    for event in events:
        schemas.validate(event, "StreamResponse")
    assert [e["index"] for e in events] == list(range(1, 9))
    assert all(e["generated_text"] is None for e in events[:-1])
    final = events[-1]
    schemas.validate(final["details"], "StreamDetails")
    assert final["details"]["generated_tokens"] == 8 and final["details"]["seed"] == 11
    full = http.post("/generate", json={"inputs": "Count: 1 2 3", "parameters": params}).json()
    assert final["generated_text"] == full["generated_text"] == "".join(e["token"]["text"] for e in events)


def test_compat_route_list_and_stream(http, schemas):
    r = http.post("/", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    schemas.validate(body[0], "GenerateResponse")
    assert body[0]["generated_text"].startswith("Hello")  # compat: return_full_text defaults to true
    r = http.post("/", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}, "stream": True})
    events = sse_events(r.text)
    assert len(events) == 3 and events[-1]["generated_text"].startswith("Hello")


def test_stop_sequence_kept_in_text(http):
    base = http.post("/generate", json={"inputs": "Once", "parameters": {"max_new_tokens": 12}}).json()
    text = base["generated_text"]
    stop = text[3:5]  # a piece of the greedy output, usually inside or across tokens
    r = http.post("/generate", json={"inputs": "Once", "parameters": {"max_new_tokens": 12, "stop": [stop],
                                                                       "details": True}}).json()
    assert r["details"]["finish_reason"] == "stop_sequence"
    assert r["generated_text"] == text[: text.index(stop) + len(stop)]


def test_return_full_text_and_truncate(http):
    r = http.post("/generate", json={"inputs": "one two three four five six",
                                     "parameters": {"max_new_tokens": 2, "return_full_text": True,
                                                    "truncate": 3, "decoder_input_details": True}}).json()
    assert r["generated_text"].startswith("one two three four five six")
    assert len(r["details"]["prefill"]) == 3  # only the last 3 prompt tokens are kept


def test_best_of_returns_other_sequences(http, schemas):
    r = http.post("/generate", json={"inputs": "A", "parameters": {"best_of": 2, "do_sample": True,
                                                                    "max_new_tokens": 5, "details": True}}).json()
    schemas.validate(r, "GenerateResponse")
    others = r["details"]["best_of_sequences"]
    assert len(others) == 1 and others[0]["seed"] != r["details"]["seed"]

    def mean(tokens):
        return sum(t["logprob"] for t in tokens) / len(tokens)
    assert mean(r["details"]["tokens"]) >= mean(others[0]["tokens"])  # the winner has the best mean logprob


def test_max_new_tokens_null_runs_to_max_total_tokens(engine_client):
    """No limit given: the budget is max_total_tokens - prompt (checked on the validated request)."""
    import asyncio

    from router.config import RouterConfig
    from router.state import build_state
    from router.schemas import GenerateParameters

    state = build_state(engine_client, RouterConfig(max_total_tokens=64))
    valid = asyncio.run(state.validator.validate("Hello there", GenerateParameters()))
    assert valid.max_new_tokens == 64 - len(valid.prompt_token_ids)


def test_open_routes(server, schemas):
    with httpx.Client(base_url=server.url, timeout=30) as anon:  # no token
        for path in ("/health", "/ping", "/"):
            assert anon.get(path).status_code == 200
        info = anon.get("/info").json()
        schemas.validate(info, "Info")
        assert anon.get("/v1/models").json()["data"][0]["id"] == info["model_id"]
        doc = anon.get("/api-doc/openapi.json").json()
        for name in ("GenerateRequest", "GenerateParameters", "GenerateResponse", "StreamResponse", "Details",
                     "Info", "ErrorResponse", "SimpleToken"):
            assert name in doc["components"]["schemas"], name
        assert anon.get("/docs").status_code == 200


def test_auth_required_with_json_401(server):
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic test-secret-key"}):
            for path in ("/generate", "/generate_stream", "/", "/tokenize", "/invocations", "/score"):
                r = anon.post(path, json={"inputs": "x"}, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.json() == {"error": "Unauthorized", "error_type": "authentication"}
                assert r.headers["www-authenticate"] == "Bearer"


def test_model_card_curl_with_bearer(server):
    body = {"inputs": "What is Deep Learning?", "parameters": {
        "do_sample": True, "top_p": 0.95, "temperature": 0.2, "top_k": 50, "max_new_tokens": 256,
        "repetition_penalty": 1.03, "stop": ["\nUser:", "<|endoftext|>", "</s>"]}}
    for path in ("/generate", "/score"):
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", server.url + path,
                              "-H", "Authorization: Bearer test-secret-key", "-H", "Content-Type: application/json",
                              "-d", json.dumps(body)], capture_output=True, text=True, timeout=120)
        payload, status = out.stdout.rsplit("\n", 1)
        assert status == "200", payload
        result = json.loads(payload)
        result = result[0] if path == "/score" else result  # /score answers like /invocations (TGI compat: a list)
        assert isinstance(result["generated_text"], str)


def test_tokenize(http, schemas):
    r = http.post("/tokenize", json={"inputs": "héllo world"})
    tokens = r.json()
    for t in tokens:
        schemas.validate(t, "SimpleToken")
    raw = "héllo world".encode()
    assert tokens[0]["id"] == 1  # BOS
    assert b"".join(raw[t["start"]:t["stop"]] for t in tokens[1:]).decode().replace(" ", "") == "hélloworld"


def test_body_errors_never_500(http, schemas):
    r = http.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("Failed to parse the request body as JSON")
    schemas.validate(r.json(), "ErrorResponse")
    nan = {"inputs": "x", "parameters": {"temperature": float("nan")}}  # `NaN` is not JSON: 400, as serde_json
    r = http.post("/generate", content=json.dumps(nan), headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("Failed to parse the request body as JSON")
    for bad in ({}, {"inputs": 3}, {"inputs": "x", "parameters": {"max_new_tokens": "many"}}, [1, 2],
                {"inputs": "x", "parameters": {"seed": -1}}):
        r = http.post("/generate", content=json.dumps(bad), headers={"content-type": "application/json"})
        assert r.status_code == 422, bad
        assert r.json()["error"].startswith("Failed to deserialize the JSON body into the target type: ")
        assert r.json()["error_type"] == "validation"
    r = http.post("/generate", content=b'{"inputs": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = http.post("/generate", json={"inputs": "x" * 2_100_000})
    assert r.status_code == 413 and "length limit exceeded" in r.json()["error"]
    r = http.post("/generate_stream", json={"inputs": "x", "parameters": {"top_k": -1}})
    assert r.status_code == 200  # TGI: stream errors are in-band
    assert sse_events(r.text) == [{"error": "Input validation error: `top_k` must be strictly positive",
                                   "error_type": "validation"}]


def test_invocations_dispatch(http):
    r = http.post("/invocations", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    assert r.status_code == 200 and isinstance(r.json(), list)
    r = http.post("/invocations", json={"foo": 1})
    assert r.status_code == 422


def test_metrics_names_and_counts(http, server):
    http.post("/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    http.post("/generate", json={"inputs": "Hi", "parameters": {"top_p": 2}})
    text = httpx.get(server.url + "/metrics").text
    for name in ("tgi_request_count", "tgi_request_success", "tgi_queue_size", "tgi_batch_current_size",
                 "tgi_batch_current_max_tokens", "tgi_batch_max_total_tokens", "tgi_request_duration_bucket",
                 "tgi_request_validation_duration", "tgi_request_queue_duration", "tgi_request_inference_duration",
                 "tgi_request_mean_time_per_token_duration", "tgi_request_generated_tokens",
                 "tgi_request_input_length", "tgi_request_max_new_tokens", "tgi_request_time_to_first_token_bucket",
                 "tgi_generated_tokens_total", "tgi_kv_cache_usage_ratio", "tgi_batch_forward_duration"):
        assert name in text, name
    assert 'tgi_request_failure{err="validation"}' in text
    ttft_count = [line for line in text.splitlines() if line.startswith("tgi_request_time_to_first_token_count")]
    assert float(ttft_count[0].split()[-1]) >= 1
    # Engine steps feed the batch metrics: a prompt chunk makes a "prefill" step, the next token a "decode" one.
    values = {line.split()[0]: float(line.split()[-1]) for line in text.splitlines() if not line.startswith("#")}
    for method in ("prefill", "decode"):
        assert values[f'tgi_batch_inference_count{{method="{method}"}}'] >= 1
        assert values[f'tgi_batch_forward_duration_count{{method="{method}"}}'] >= 1
    assert values["tgi_batch_next_size_count"] >= 2


def test_health_503_when_engine_dead(make_client):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.router.conftest import LiveServer

    engine = make_client()
    with LiveServer(create_app(engine, RouterConfig())) as live:
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200
        engine.shutdown()  # the engine loop stops: the server must say so
        r = httpx.get(live.url + "/health", timeout=10)
        assert r.status_code == 503 and r.json() == {"error": "unhealthy", "error_type": "healthcheck"}


def test_cors_and_scoring_dispatch(server, auth_headers):
    r = httpx.options(server.url + "/generate", headers={"Origin": "https://app.example",
                                                         "Access-Control-Request-Method": "POST"}, timeout=10)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://app.example")
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    r = httpx.post(server.url + "/score", json=chat, headers=auth_headers, timeout=60)
    import importlib.util
    if importlib.util.find_spec("router.openai") is not None:  # the OpenAI module is in this checkout
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "chat.completion"
    else:
        assert r.status_code == 422 and "OpenAI routes" in r.json()["error"]
