"""Other clients against the real server: the async openai SDK (concurrent, streaming and not), huggingface_hub's
InferenceClient.chat_completion (streaming, tools), and the raw SSE wire (strict chunk types, errors, [DONE])."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.router.conftest import API_KEY
from tests.router.test_openai_tool_calls import PARAMS, TOOLS

MESSAGES = [{"role": "user", "content": "Tina has 5 eggs. How many eggs?"}]


def test_async_sdk_concurrent_streaming_and_not(server):
    async def run() -> tuple[list, list]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)

        async def streamed(seed: int) -> str:
            stream = await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, seed=seed,
                                                          stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        async def plain(seed: int) -> str:
            completion = await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, seed=seed)
            return completion.choices[0].message.content

        seeds = range(6)
        results = await asyncio.gather(*(streamed(s) for s in seeds), *(plain(s) for s in seeds))
        await client.close()
        return results[:6], results[6:]

    streamed, plain = asyncio.run(run())
    assert streamed == plain  # same seed, same text, whatever else ran in the batch


def test_huggingface_hub_chat_completion(server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.url, api_key=API_KEY)
    output = client.chat_completion(MESSAGES, max_tokens=6, seed=1)
    assert output.choices[0].message.content and output.usage.completion_tokens == 6
    chunks = list(client.chat_completion(MESSAGES, max_tokens=6, seed=1, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == output.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"
    called = client.chat_completion(MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=120, seed=2)
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    streamed = list(client.chat_completion(MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=120, seed=2,
                                           stream=True))
    deltas = [d for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == call.function.name
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == json.loads(call.function.arguments)
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


def test_huggingface_hub_reads_errors(server):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client = InferenceClient(base_url=server.url, api_key=API_KEY)
    with pytest.raises(HfHubHTTPError, match="top_logprobs"):
        client.chat_completion(MESSAGES, logprobs=True, top_logprobs=50)


def _sse(server, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def test_raw_chat_chunks_are_strict_openai_types(server):
    # seeded: an unseeded draw may sample EOS early and leave fewer than 2 x 5 tokens
    lines = _sse(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 5, "stream": True, "n": 2,
                                                   "seed": 0, "logprobs": True, "top_logprobs": 2,
                                                   "stream_options": {"include_usage": True}})
    assert lines[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(line), strict=True) for line in lines[:-1]]
    with_logprobs = [c for c in chunks if c.choices and c.choices[0].logprobs is not None]
    assert len(with_logprobs) == chunks[-1].usage.completion_tokens == 10  # one logprob per generated token


def test_a_failure_mid_stream_is_an_error_event_then_done(server, monkeypatch):
    """Fault injection: the engine fails after two tokens of choice 1 (choice 0 is unaffected)."""
    from router.errors import GenerationError

    infer = server.server.config.app.state.router.infer
    real_stream = infer.stream
    calls = []

    async def failing_stream(valid, cut_stop=False, observe=True):
        calls.append(valid)
        run_number = len(calls)  # the second run of each request fails
        async with contextlib.aclosing(real_stream(valid, cut_stop, observe)) as items:
            async for item in items:
                if run_number == 2 and item.index == 3:
                    raise GenerationError("injected failure")
                yield item

    monkeypatch.setattr(infer, "stream", failing_stream)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIError, match="Request failed during generation: injected failure") as info:
        list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=30, n=2, stream=True))
    assert info.value.body["http_status_code"] == 424
    calls.clear()
    lines = _sse(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 30, "n": 2, "stream": True})
    error = json.loads(lines[-2])
    assert lines[-1] == "[DONE]" and error["error_type"] == "generation" and "injected" in error["error"]["message"]
    # Not streamed: the runs read their events at the end, straight from the engine client (no stream items), so
    # the fault is the engine's error event for the second run. An HTTP 424, and the sibling run (1000 tokens to
    # go, EOS banned) is aborted.
    from server.protocol import TokenEvent

    engine = server.server.config.app.state.router.client
    real_generate, runs = engine.generate, []

    async def failing_generate(request, live=True):
        runs.append(request)
        if len(runs) == 2:
            yield TokenEvent(request.request_id, error="injected failure")
            return
        async with contextlib.aclosing(real_generate(request, live)) as events:
            async for event in events:
                yield event

    monkeypatch.setattr(engine, "generate", failing_generate)
    decoded_before = engine.stats().num_decode_tokens_total
    with pytest.raises(openai.APIStatusError, match="injected failure") as info:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1000, n=2, temperature=0,
                                       logit_bias={"2": -100})
    assert info.value.status_code == 424 and info.value.body["type"] == "generation"
    deadline = time.monotonic() + 5  # aborts reach the engine thread at its next step
    while engine.stats().num_running + engine.stats().num_waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats().num_running + engine.stats().num_waiting == 0
    assert engine.stats().num_decode_tokens_total - decoded_before < 200


def test_validation_errors_before_a_stream_are_http_errors(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"messages": MESSAGES, "stream": True, "response_format": {
                              "type": "regex", "value": "(unclosed"}})
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["message"].startswith("Input validation error: grammar is not valid")
    assert body["error_type"] == "validation"


def test_openai_stream_helper_accumulates_a_tool_call(server):
    """The SDK's own accumulator (chat.completions.stream) rebuilds the final message from our deltas."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with client.chat.completions.stream(model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                        max_tokens=120, seed=6) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.role == "assistant"
    call = choice.message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    # (the helper refuses finish_reason "length": a regex grammar makes the answer end with EOS)
    kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=20, seed=6,
                  response_format={"type": "regex", "value": "(five|six) eggs"})
    with client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.role == "assistant"
    assert final.choices[0].message.content == client.chat.completions.create(**kwargs).choices[0].message.content


def test_tgi_python_client_chat(server):
    """TGI's own client (text-generation) sends every field, null or not, plus repetition_penalty."""
    from text_generation import Client
    from text_generation.types import Message

    client = Client(server.url, headers={"Authorization": f"Bearer {API_KEY}"})
    reply = client.chat(messages=[Message(role="user", content="Tina has 5 eggs. How many eggs?")], max_tokens=4,
                        seed=2, repetition_penalty=1.2)
    assert reply.choices[0].message.content and reply.usage["completion_tokens"] == 4


def test_client_disconnect_aborts_every_choice(server):
    engine = server.server.config.app.state.router.client
    before = engine.stats().num_decode_tokens_total
    body = {"messages": MESSAGES, "max_tokens": 1000, "n": 3, "stream": True, "logit_bias": {"2": -100}}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        lines = response.iter_lines()
        for _ in range(8):
            next(lines)
    deadline = time.monotonic() + 5
    while engine.stats().num_running + engine.stats().num_waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats().num_running + engine.stats().num_waiting == 0
    assert engine.stats().num_decode_tokens_total - before < 3 * 300  # far from the 3000 asked for
