"""TGI's request accounting in one place (router.accounting) and the one stream ending (router.streaming.
stream_ending): every counted request ends as exactly one success or one failure, whatever the route or the way it
ends. Unit tests over the real Metrics registry, and fault injection through a real uvicorn server."""
from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from router.accounting import Outcome, counted, uncounted_errors
from router.errors import RouterError, ValidationError
from router.http import BodyError
from router.metrics import Metrics
from router.streaming import stream_ending, tgi_error_event
from tests.router.conftest import API_KEY

pytestmark = pytest.mark.timeout(120)


def _counts(metrics: Metrics) -> dict[str, float]:
    values = {}
    for line in metrics.render().decode().splitlines():
        if line.startswith(("tgi_request_count ", "tgi_request_success ", "tgi_request_failure{")):
            name, value = line.rsplit(" ", 1)
            if float(value):
                values[name] = float(value)
    return values


def test_an_outcome_is_counted_once_and_the_first_wins():
    metrics = Metrics(10, 20)
    outcome = Outcome(metrics)
    outcome.failure(ValidationError("bad"))
    outcome.success()
    outcome.failure(RouterError("x", 424, "generation"))
    assert _counts(metrics) == {"tgi_request_count": 1, 'tgi_request_failure{err="validation"}': 1}


def test_counted_counts_route_errors_once_and_the_handlers_do_not_again():
    metrics = Metrics(10, 20)
    handlers = uncounted_errors(metrics)
    error = ValidationError("bad")
    with pytest.raises(ValidationError), counted(metrics):
        raise error
    handlers(error)  # the app's RouterError handler sees the same error: counted already
    handlers(ValidationError("from /tokenize"))  # a route outside `counted`: the handlers count it
    handlers(BodyError("not JSON", 400, "validation"))  # never counted (TGI's extractor)
    assert _counts(metrics) == {"tgi_request_count": 1, 'tgi_request_failure{err="validation"}': 2}
    with counted(metrics):
        pass
    with counted(metrics) as outcome:
        outcome.streamed()  # the stream decides: nothing counted at the end of the block
    assert _counts(metrics)["tgi_request_success"] == 1 and _counts(metrics)["tgi_request_count"] == 3


class _Internal(BaseModel):
    value: int = Field(ge=0)


def test_a_value_an_internal_model_refuses_is_a_validation_failure():
    metrics = Metrics(10, 20)
    with pytest.raises(PydanticValidationError), counted(metrics):
        _Internal(value=-1)
    assert _counts(metrics) == {"tgi_request_count": 1, 'tgi_request_failure{err="validation"}': 1}


async def _events(fail: BaseException | None = None, n: int = 2):
    for i in range(n):
        yield {"data": str(i)}
    if fail is not None:
        raise fail


async def _drain(stream) -> list[dict]:
    return [event async for event in stream]


@pytest.mark.parametrize("fail, label, message", [
    (None, None, None),
    (RouterError("Request failed during generation: boom", 424, "generation"), "generation", "boom"),
    (RuntimeError("a bug"), "incomplete", "Incomplete generation stream"),
])
def test_stream_ending_success_or_one_error_event_then_done(fail, label, message):
    metrics = Metrics(10, 20)
    events = asyncio.run(_drain(stream_ending(_events(fail), Outcome(metrics), tgi_error_event, {"data": "[DONE]"})))
    assert [e["data"] for e in events[:2]] == ["0", "1"] and events[-1] == {"data": "[DONE]"}
    counts = _counts(metrics)
    if fail is None:
        assert len(events) == 3 and counts == {"tgi_request_count": 1, "tgi_request_success": 1}
    else:
        assert message in json.loads(events[2]["data"])["error"] and len(events) == 4
        assert counts == {"tgi_request_count": 1, f'tgi_request_failure{{err="{label}"}}': 1}


def test_a_stream_cut_before_its_end_is_dropped_and_closes_its_events():
    metrics = Metrics(10, 20)
    closed = []

    async def events():
        try:
            yield {"data": "0"}
            await asyncio.Event().wait()  # the engine, slow
            yield {"data": "never"}
        finally:
            closed.append(True)

    async def cut_after_first(close: bool) -> None:
        stream = stream_ending(events(), Outcome(metrics), tgi_error_event)
        await stream.__anext__()
        if close:  # the consumer gives up between events
            await stream.aclose()
            return
        step = asyncio.ensure_future(stream.__anext__())  # cancelled while it waits for the next token
        await asyncio.sleep(0)
        step.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await step

    asyncio.run(cut_after_first(close=False))
    asyncio.run(cut_after_first(close=True))
    assert closed == [True, True]
    assert _counts(metrics) == {"tgi_request_count": 2, 'tgi_request_failure{err="dropped"}': 2}


def _sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data:"):].strip() for line in response.text.splitlines() if line.startswith("data:")]


def _scrape(server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines()
                                                   if line.startswith("tgi_request_"))}


def test_an_unexpected_failure_mid_stream_ends_both_kinds_of_stream_alike(server, monkeypatch):
    """Fault injection: a bug (not a RouterError) after two tokens. TGI and OpenAI streams both end with one
    `Incomplete generation stream` event (OpenAI's then `[DONE]`) and count one err="incomplete" failure."""
    infer = server.server.config.app.state.router.infer
    real_stream = infer.stream

    async def buggy_stream(valid, cut_stop=False, observe=True):
        async with contextlib.aclosing(real_stream(valid, cut_stop, observe)) as items:
            async for item in items:
                if item.index == 3:
                    raise RuntimeError("injected bug")
                yield item

    monkeypatch.setattr(infer, "stream", buggy_stream)
    before = _scrape(server)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    tgi = httpx.post(f"{server.url}/generate_stream", headers=headers, timeout=60,
                     json={"inputs": "Hi", "parameters": {"max_new_tokens": 20}})
    chat = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, json={
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20, "stream": True})
    tgi_last = json.loads(_sse_data(tgi)[-1])
    assert tgi_last == {"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"}
    chat_data = _sse_data(chat)
    assert chat_data[-1] == "[DONE]"
    error = json.loads(chat_data[-2])
    assert error["error"]["message"] == "Incomplete generation stream" and error["error"]["http_status_code"] == 500
    after = _scrape(server)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    assert delta["tgi_request_count"] == 2 and delta["tgi_request_success"] == 0
    assert delta['tgi_request_failure{err="incomplete"}'] == 2
