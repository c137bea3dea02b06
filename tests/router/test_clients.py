"""The official clients work unchanged against a live server: TGI's `text-generation` Client/AsyncClient and
huggingface_hub's InferenceClient.text_generation, including their typed errors for our error bodies."""
from __future__ import annotations

import asyncio

import pytest
from huggingface_hub import InferenceClient
from text_generation import AsyncClient, Client
from text_generation.errors import OverloadedError, ValidationError

from tests.router.conftest import API_KEY, LiveServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def tgi(server):
    return Client(server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


def test_text_generation_generate_details(tgi):
    r = tgi.generate("Hello", max_new_tokens=5, decoder_input_details=True, top_n_tokens=2, seed=5, do_sample=True,
                     watermark=True, stop_sequences=["qqq"])
    assert r.details.generated_tokens == 5 and r.details.seed == 5
    assert r.details.prefill[0].logprob is None and len(r.details.top_tokens) == 5
    assert r.generated_text == "".join(t.text for t in r.details.tokens if not t.special)


def test_text_generation_stream_and_best_of(tgi):
    tokens = list(tgi.generate_stream("Hello", max_new_tokens=6, top_n_tokens=1))
    assert len(tokens) == 6 and tokens[-1].details.generated_tokens == 6
    assert tokens[-1].generated_text == "".join(t.token.text for t in tokens)
    r = tgi.generate("Hello", max_new_tokens=4, best_of=2, do_sample=True)
    assert len(r.details.best_of_sequences) == 1


def test_text_generation_stop_sequence(tgi):
    text = tgi.generate("Hi", max_new_tokens=10).generated_text
    stop = text[2:4]
    r = tgi.generate("Hi", max_new_tokens=10, stop_sequences=[stop])
    assert r.details.finish_reason.value == "stop_sequence" and r.generated_text.endswith(stop)


def test_text_generation_typed_validation_errors(tgi):
    with pytest.raises(ValidationError, match="`top_n_tokens` must be >= 0 and <= 5. Given: 7"):
        tgi.generate("Hello", max_new_tokens=2, top_n_tokens=7)
    with pytest.raises(ValidationError, match="`stop` supports up to 4 stop sequences"):
        list(tgi.generate_stream("Hello", max_new_tokens=2, stop_sequences=list("abcde")))  # in-band error event


def test_async_client(server):
    async def run():
        client = AsyncClient(server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
        r = await client.generate("Hi", max_new_tokens=3, seed=1, do_sample=True)
        events = [e async for e in client.generate_stream("Hi", max_new_tokens=3, seed=1, do_sample=True)]
        return r, events
    r, events = asyncio.run(run())
    assert r.generated_text == events[-1].generated_text  # same seed, same text


def test_huggingface_hub_inference_client(server):
    client = InferenceClient(base_url=server.url, api_key=API_KEY)
    out = client.text_generation("Hello", max_new_tokens=5, details=True, seed=3, do_sample=True,
                                 decoder_input_details=True, top_n_tokens=2, watermark=True, stop=["zzz"])
    assert out.details.generated_tokens == 5 and out.details.seed == 3
    streamed = list(client.text_generation("Hello", max_new_tokens=5, seed=3, do_sample=True, stream=True,
                                           watermark=True,
                                           details=True))
    assert streamed[-1].generated_text == out.generated_text
    best = client.text_generation("Hello", max_new_tokens=3, best_of=2, do_sample=True, details=True)
    assert len(best.details.best_of_sequences) == 1
    from huggingface_hub.errors import TextGenerationError
    with pytest.raises(TextGenerationError, match="temperature"):  # hub's typed ValidationError subclass
        client.text_generation("Hello", max_new_tokens=2, temperature=-1.0)


def test_overloaded_is_typed(make_client):
    """max_concurrent_requests=1: a second request while one streams gets 429 `Model is overloaded`."""
    from router.app import create_app
    from router.config import RouterConfig

    engine = make_client()
    try:
        with LiveServer(create_app(engine, RouterConfig(max_concurrent_requests=1))) as live:
            client = Client(live.url, timeout=60)
            stream = client.generate_stream("Hello", max_new_tokens=200)
            next(stream)  # the first request holds the only slot
            with pytest.raises(OverloadedError, match="Model is overloaded"):
                client.generate("Hello", max_new_tokens=2)
            stream.close()
    finally:
        engine.shutdown()
