"""TGI response shapes: results and stream items -> `/generate` bodies and `/generate_stream` SSE events.

SSE framing is TGI's: `data: <compact JSON>\n\n`, a `:` comment after `keep_alive_s` of silence, no `[DONE]`.
Errors after the 200 went out are one in-band `{"error", "error_type"}` event, then the stream closes: the ending
(`stream_ending`) is shared with the OpenAI streams, which add `data: [DONE]`, and it decides the request's outcome.
A reader that stops reading (one event not accepted by the socket for SEND_TIMEOUT_S) is cut: closing the event
generator releases its concurrency permit and aborts its engine sequences.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from router.accounting import Outcome
from router.errors import RouterError
from router.shutdown import until_drained
from router.infer import Generation, StreamItem, TokenInfo
from router.validation import ValidRequest

log = logging.getLogger("rho_serve.router")
SEND_TIMEOUT_S = 10.0  # read at each response, so a server (or a test) may change it


def token_dict(t: TokenInfo) -> dict:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def prefill_dict(t: TokenInfo) -> dict:
    return {"id": t.id, "text": t.text, "logprob": t.logprob}


def full_text(valid: ValidRequest, text: str) -> str:
    return valid.inputs + text if valid.return_full_text else text


def _sequence_details(gen: Generation, valid: ValidRequest) -> dict:
    details = {"finish_reason": gen.finish_reason.value, "generated_tokens": gen.num_generated_tokens,
               "seed": gen.seed, "prefill": [prefill_dict(t) for t in gen.prefill],
               "tokens": [token_dict(t) for t in gen.tokens]}
    if valid.params.top_n_tokens > 0:
        details["top_tokens"] = [[token_dict(t) for t in row] for row in gen.top_tokens]
    return details


def generate_response(gen: Generation, valid: ValidRequest) -> dict:
    """GenerateResponse; `details` only when details or decoder_input_details was asked for (TGI)."""
    body: dict = {"generated_text": full_text(valid, gen.generated_text)}
    if valid.details or valid.decoder_input_details:
        details = _sequence_details(gen, valid)
        if gen.best_of_sequences:
            details["best_of_sequences"] = [
                {"generated_text": full_text(valid, g.generated_text), **_sequence_details(g, valid)}
                for g in gen.best_of_sequences]
        body["details"] = {k: details[k] for k in ("finish_reason", "generated_tokens", "seed", "prefill", "tokens",
                                                   "best_of_sequences", "top_tokens") if k in details}
    return body


def stream_event(item: StreamItem, valid: ValidRequest) -> dict:
    event: dict = {"index": item.index, "token": token_dict(item.token)}
    if item.top_tokens:
        event["top_tokens"] = [token_dict(t) for t in item.top_tokens]
    if item.finish_reason is None:
        event["generated_text"] = None
        event["details"] = None
        return event
    event["generated_text"] = full_text(valid, item.generated_text or "")
    event["details"] = ({"finish_reason": item.finish_reason.value, "generated_tokens": item.num_generated_tokens,
                         "seed": item.seed, "input_length": item.num_prompt_tokens} if valid.details else None)
    return event


async def tgi_events(items: AsyncIterator[StreamItem], valid: ValidRequest) -> AsyncIterator[dict]:
    """StreamItems -> SSE `data` payloads (errors are left to `stream_ending`)."""
    async for item in items:
        yield {"data": json.dumps(stream_event(item, valid), separators=(",", ":"), allow_nan=False)}


def tgi_error_event(e: RouterError) -> dict:
    return {"data": json.dumps(e.body())}


async def stream_ending(events: AsyncIterator[dict], outcome: Outcome, error_event: Callable[[RouterError], dict],
                        done: dict | None = None) -> AsyncIterator[dict]:
    """How every stream ends, TGI's and OpenAI's: a success, or one in-band error event (the 200 is already sent;
    an unexpected exception is TGI's `Incomplete generation stream`, never a traceback on the wire), counted as a
    failure; then `done` (OpenAI's `data: [DONE]`; TGI has none). A stream cut before its end (its client left, a
    reader too slow for the send timeout, the drain deadline of router.shutdown.until_drained) counts as dropped.
    Closing `events` at once matters: it releases the concurrency permits and aborts the engine sequences."""
    try:
        async for event in events:
            yield event
        outcome.success()
    except RouterError as e:
        outcome.failure(e)
        yield error_event(e)
    except (asyncio.CancelledError, GeneratorExit):  # cut mid-stream: the engine sequences are aborted below
        outcome.failure(RouterError("the stream was cut before its end", 499, "dropped"))
        raise
    except Exception:  # noqa: BLE001 - never a traceback on the wire
        log.exception("stream failed")
        err = RouterError("Incomplete generation stream", 500, "incomplete_generation_stream")
        outcome.failure(err)
        yield error_event(err)
    finally:
        await events.aclose()
    if done is not None:
        yield done


def sse_response(events: AsyncIterator[dict], keep_alive_s: float, headers: dict | None = None,
                 drain_s: float = 0.0) -> EventSourceResponse:
    """drain_s: on server shutdown, how long a running stream may go on before it is cut (SIGTERM drain)."""
    return EventSourceResponse(
        until_drained(events), headers={"X-Accel-Buffering": "no", **(headers or {})}, sep="\n", ping=keep_alive_s,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        shutdown_grace_period=drain_s, send_timeout=SEND_TIMEOUT_S)
