"""/metrics as TGI exports it, through a real uvicorn server: the names TGI's Grafana dashboard queries, counters
without `_total` and without `_created` samples, request histograms for every generation route, and failure
accounting (request_count = success + failures once nothing is in flight)."""
from __future__ import annotations

import re

import httpx
import pytest

from tests.router.conftest import API_KEY, LiveServer

pytestmark = pytest.mark.timeout(180)

# Every series name that TGI's Grafana dashboard queries: assets/tgi_grafana.json of
# huggingface/text-generation-inference at db931fcf (2026-01-08), extracted with
#   grep -o 'tgi_[a-z_]*\({[^}]*}\)\?' assets/tgi_grafana.json | sort -u   (the `container` label dropped)
DASHBOARD_SERIES = (
    'tgi_batch_concat_duration_bucket{method="decode"', "tgi_batch_concat",
    "tgi_batch_current_max_tokens", "tgi_batch_current_size",
    'tgi_batch_decode_duration_bucket{method="decode"', 'tgi_batch_filter_duration_bucket{method="decode"',
    'tgi_batch_forward_duration_bucket{method="decode"', 'tgi_batch_inference_duration_bucket{method="decode"',
    'tgi_batch_inference_duration_bucket{method="prefill"', "tgi_queue_size", "tgi_request_count",
    "tgi_request_duration_bucket", "tgi_request_failure", "tgi_request_generated_tokens_bucket",
    "tgi_request_generated_tokens_count", "tgi_request_generated_tokens_sum", "tgi_request_input_length_bucket",
    "tgi_request_mean_time_per_token_duration_bucket", "tgi_request_queue_duration_bucket",
    "tgi_request_skipped_tokens_bucket", "tgi_request_success",
)
# TGI's types (router/src/server.rs, backends/v3/src/{backend,queue}.rs).
COUNTERS = ("tgi_request_count", "tgi_request_success", "tgi_request_failure", "tgi_batch_inference_count",
            "tgi_batch_inference_success", "tgi_batch_inference_failure", "tgi_batch_concat")
REQUEST_HISTOGRAMS = ("tgi_request_duration", "tgi_request_validation_duration", "tgi_request_queue_duration",
                      "tgi_request_inference_duration", "tgi_request_mean_time_per_token_duration",
                      "tgi_request_generated_tokens", "tgi_request_input_length", "tgi_request_max_new_tokens")


@pytest.fixture(scope="module")
def live(make_client):
    """A server of its own: its counters start at zero."""
    from router.app import create_app
    from router.config import RouterConfig

    engine = make_client()
    with LiveServer(create_app(engine, RouterConfig(api_key=API_KEY))) as server:
        yield server
    engine.shutdown()


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        yield client


def scrape(http) -> tuple[str, dict[str, float]]:
    text = http.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return text, values


CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
REQUESTS = {  # one request of each generation kind
    "generate": ("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}),
    "generate_stream": ("/generate_stream", {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}),
    "chat": ("/v1/chat/completions", CHAT),
    "chat_stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "completions": ("/v1/completions", {"prompt": "Hi", "max_tokens": 3}),
    "completions_stream": ("/v1/completions", {"prompt": "Hi", "max_tokens": 3, "stream": True}),
}


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_request_histograms_for_every_route(http, kind):
    path, body = REQUESTS[kind]
    _, before = scrape(http)
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    _, after = scrape(http)
    assert after["tgi_request_success"] == before["tgi_request_success"] + 1
    for name in REQUEST_HISTOGRAMS:
        assert after[f"{name}_count"] == before[f"{name}_count"] + 1, name
    assert after["tgi_request_generated_tokens_sum"] - before["tgi_request_generated_tokens_sum"] >= 1
    assert after["tgi_request_max_new_tokens_sum"] - before["tgi_request_max_new_tokens_sum"] == 3


def test_dashboard_names_types_and_no_suffixes(http):
    for path, body in REQUESTS.values():
        assert http.post(path, json=body).status_code == 200
    http.post("/generate", json={"inputs": "Hi", "parameters": {"top_k": -1}})  # a failure
    text, values = scrape(http)
    for series in DASHBOARD_SERIES:
        assert any(name == series or name.startswith(series + "{") or name.startswith(series + ",")
                   for name in values), series
    assert not re.search(r"^\w+_created", text, re.M)  # prometheus_client's timestamps: not TGI's
    assert not re.search(r"^tgi_\w+_total\b", text.replace("tgi_generated_tokens_total", ""), re.M)
    for name in COUNTERS:
        assert f"# TYPE {name} counter" in text, name
    for name in REQUEST_HISTOGRAMS + ("tgi_batch_next_size", "tgi_batch_forward_duration"):
        assert f"# TYPE {name} histogram" in text, name
    for name in ("tgi_queue_size", "tgi_batch_current_size", "tgi_batch_current_max_tokens",
                 "tgi_batch_max_total_tokens"):
        assert f"# TYPE {name} gauge" in text, name
    assert values['tgi_request_failure{err="validation"}'] >= 1
    assert values['tgi_batch_inference_count{method="prefill"}'] >= 1
    assert values['tgi_batch_inference_count{method="decode"}'] >= 1


def test_batch_size_buckets_are_readable(http):
    text, _ = scrape(http)
    bounds = re.findall(r'^tgi_batch_next_size_bucket\{le="([^"]+)"\}', text, re.M)
    assert bounds[:4] == ["1", "2", "3", "4"] and bounds[-2:] == ["1024", "+Inf"]
    assert len(bounds) <= 40  # TGI's 1,024 buckets make every scrape ~1,000 lines longer


def _post_raw(live, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}", "content-type": content_type}
    return httpx.post(live.url + path, content=content, headers=headers, timeout=60)


def test_failure_accounting(http, live):
    _, before = scrape(http)
    # Bodies the extractor refuses count nothing (TGI: axum rejects them before the handler runs).
    for path in ("/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions"):
        assert _post_raw(live, path, b"{not json").status_code == 400
        assert _post_raw(live, path, b'{"unexpected": 1}').status_code == 422
    # Suffix and batch-size errors count as err="validation" (TGI's server.rs).
    r = http.post("/v1/completions", json={"prompt": "Hi", "suffix": "x"})
    assert r.status_code == 422 and r.json()["error_type"] == "suffix not supported"
    r = http.post("/v1/completions", json={"prompt": ["a"] * 5, "max_tokens": 1})
    assert r.status_code == 422 and r.json()["error_type"] == "batch size exceeded"
    assert http.post("/generate", json={"inputs": "Hi", "parameters": {"temperature": -1}}).status_code == 422
    # best_of 0 is accepted: TGI checks best_of only when it is > 1.
    r = http.post("/generate", json={"inputs": "Hi", "parameters": {"best_of": 0, "max_new_tokens": 2}})
    assert r.status_code == 200, r.text
    _, after = scrape(http)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if k.startswith(("tgi_request_count",
                                                                               "tgi_request_success",
                                                                               "tgi_request_failure"))}
    assert delta["tgi_request_count"] == 4 and delta["tgi_request_success"] == 1
    assert delta['tgi_request_failure{err="validation"}'] == 3
    assert sum(v for k, v in delta.items() if k.startswith("tgi_request_failure")) == 3
    assert not any('"suffix' in k or '"batch size' in k for k in after)
    # Once idle, every counted request ended as one success or one failure.
    failures = sum(v for k, v in after.items() if k.startswith("tgi_request_failure"))
    assert after["tgi_request_count"] == after["tgi_request_success"] + failures
