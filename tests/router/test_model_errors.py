"""A model that produces NaN at run time (issue #15): the affected request gets TGI's 424 model error, the others in
its batch go on, and /health is 503 until a later step's logits are all finite.

The checkpoint's weights are all finite: in layer 0, column 0 of q_proj and k_proj is 1e30, and column 0 of the
embeddings is 0 except for one token's. So only a sequence holding that token has q and k of ~1e31 there: its
attention score overflows to inf in float32, the softmax gives NaN, and layer 1 spreads it over the sequence.
Every other sequence sees 1e30 * 0 = 0 and is unchanged. Through a real server on loopback.
"""
from __future__ import annotations

import json
import shutil

import httpx
import pytest

pytestmark = pytest.mark.timeout(180)
POISON = "poison"  # its last token is the one whose embedding wakes the 1e30 weights up
GOOD = {"inputs": "Hello world", "parameters": {"max_new_tokens": 4, "ignore_eos": True}}
MESSAGE = "Request failed during generation: the model produced non-finite logits (NaN or inf) for this sequence"


def _poison(model_dir, token_id: int) -> None:
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    weights = load_file(str(path))
    embed = weights["model.embed_tokens.weight"]  # (vocab, hidden)
    embed[:, 0] = 0.0
    embed[token_id, 0] = 1.0
    for name in ("q_proj", "k_proj"):
        weights[f"model.layers.0.self_attn.{name}.weight"][:, 0] = 1e30  # (out, hidden): finite, huge
    save_file(weights, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def live(tiny_llama_dir, tokenizer, tmp_path_factory, make_client):
    from router.app import create_app
    from router.config import RouterConfig
    from tests.live_server import LiveServer

    model_dir = tmp_path_factory.mktemp("nan-llama") / "model"
    shutil.copytree(tiny_llama_dir, model_dir)
    _poison(model_dir, tokenizer(POISON, add_special_tokens=False)["input_ids"][-1])
    engine = make_client(model_id=str(model_dir))
    try:
        with LiveServer(create_app(engine, RouterConfig())) as server:
            yield server
    finally:
        engine.shutdown()


def test_nan_logits_are_a_424_model_error_and_health_says_so_until_a_step_is_finite(live):
    with httpx.Client(base_url=live.url, timeout=60) as http:
        r = http.post("/generate", json={"inputs": f"a {POISON}", "parameters": {"max_new_tokens": 4}})
        assert r.status_code == 424, r.text
        assert r.json()["error_type"] == "generation" and r.json()["error"].startswith(MESSAGE), r.text
        health = http.get("/health")
        assert health.status_code == 503 and health.json() == {"error": "unhealthy", "error_type": "healthcheck"}
        assert "non-finite logits" in health.headers["x-unhealthy-reason"]
        assert http.post("/generate", json=GOOD).status_code == 200  # a finite step: healthy again
        assert http.get("/health").status_code == 200
        metrics = http.get("/metrics").text
    assert 'tgi_request_failure{err="generation"} 1' in metrics


def test_a_stream_gets_the_error_in_band_and_the_chat_route_its_own_shape(live):
    with httpx.Client(base_url=live.url, timeout=60) as http:
        r = http.post("/generate_stream", json={"inputs": POISON, "parameters": {"max_new_tokens": 4}})
        chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": POISON}],
                                                       "max_tokens": 4})
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    assert r.status_code == 200 and len(events) == 1, r.text
    assert events[0]["error_type"] == "generation" and events[0]["error"].startswith(MESSAGE)
    assert chat.status_code == 424 and chat.json()["error"]["message"].startswith(MESSAGE), chat.text


def test_only_the_affected_sequence_fails(live):
    """A poisoned request joins the batch of a running stream: it fails; the stream runs to its last token."""
    body = {"inputs": "Hello world", "parameters": {"max_new_tokens": 80, "ignore_eos": True}}
    with httpx.Client(base_url=live.url, timeout=60) as http:
        with http.stream("POST", "/generate_stream", json=body) as stream:
            lines = stream.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
            poisoned = http.post("/generate", json={"inputs": POISON, "parameters": {"max_new_tokens": 4}})
            rest = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert "token" in first
    assert poisoned.status_code == 424, poisoned.text
    assert not [e for e in rest if "error" in e], rest
    assert len(rest) == 79 and rest[-1]["generated_text"] is not None  # all 80 tokens, the last with the text
