"""The OpenAI routes' SSE streams: chat and completion chunks of `n` concurrent runs, each choice's running state in
one small dataclass, the interleaving of the runs (`merged`), and the error event.

A stream ends as every stream does (router.streaming.stream_ending): counted as a success, or one error event
(`{"error": {...}, "error_type", "http_status_code"}`); then `data: [DONE]`.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from router.accounting import Outcome
from router.detokenizer import TokenTexts
from router.errors import RouterError
from router.infer import Infer, Permits, StreamItem
from router.openai_schemas import ChatCompletionRequest, CompletionRequest, chat_logprob, completion_logprobs, usage
from router.streaming import stream_ending
from router.tools import ToolCallStream, finish_reason
from router.validation import ValidRequest
from server.protocol import FinishReason

DONE = {"data": "[DONE]"}


def error_body(e: RouterError) -> dict:
    return {"error": {"message": e.message, "type": e.error_type, "param": None, "code": None},
            "error_type": e.error_type}


def stream_error(e: RouterError) -> dict:
    body = error_body(e)
    body["error"]["http_status_code"] = e.status  # TGI's field: the status the error would have had
    return sse(body)


def sse(payload: dict) -> dict:
    return {"data": json.dumps(payload, separators=(",", ":"), ensure_ascii=False)}


def openai_stream(events: AsyncIterator[dict], outcome: Outcome) -> AsyncIterator[dict]:
    return stream_ending(events, outcome, stream_error, DONE)


@dataclass
class ChatChoice:
    """One streamed chat choice: its tool-call parser and the tokens its run generated so far."""

    parser: ToolCallStream
    num_generated: int = 0


@dataclass
class TextChoice:
    """One streamed completion choice: the echoed prompt ("" without echo), where its next token's text starts in
    the choice's text (logprobs.text_offset, echo included), and the tokens its run generated so far."""

    echo: str
    offset: int
    num_generated: int = 0


async def chat_events(texts: TokenTexts, infer: Infer, req: ChatCompletionRequest, runs: list[ValidRequest],
                      mode: str, meta: dict, permits: Permits) -> AsyncIterator[dict]:
    chunk = {**meta, "object": "chat.completion.chunk"}
    extra = {"usage": None} if req.include_usage else {}
    choices = [ChatChoice(ToolCallStream(mode)) for _ in runs]

    def event(index: int, delta: dict, logprobs=None, finish: str | None = None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**chunk, "choices": [choice], **extra})

    for i in range(len(runs)):
        yield event(i, {"role": "assistant", "content": ""})
    async with permits:  # taken before the response started; released when the stream ends
        async for i, item in merged([infer.stream(run, cut_stop=True) for run in runs]):
            choice = choices[i]
            choice.num_generated = item.num_generated_tokens
            logprobs = {"content": [chat_logprob(texts, item.token, item.top_tokens)]} if req.logprobs else None
            deltas = choice.parser.feed(item.text)
            if item.finish_reason is not None:
                deltas += choice.parser.finish()
            for j, delta in enumerate(deltas or ([{}] if logprobs else [])):
                yield event(i, _delta_json(delta), logprobs if j == 0 else None)
            if item.finish_reason is not None:
                yield event(i, {}, None, finish_reason(choice.parser, item.finish_reason.value))
    if req.include_usage:
        num_prompt = len(runs[0].prompt_token_ids)
        yield sse({**chunk, "choices": [], "usage": usage(num_prompt, sum(c.num_generated for c in choices))})


def _delta_json(delta: dict) -> dict:
    if "tool_calls" in delta:
        return {"tool_calls": [c.model_dump(exclude_none=True) for c in delta["tool_calls"]]}
    return delta


def completion_finish(reason: FinishReason) -> str:
    return "length" if reason == FinishReason.LENGTH else "stop"


async def completion_events(texts: TokenTexts, infer: Infer, req: CompletionRequest, valids: list[ValidRequest],
                            runs: list[ValidRequest], meta: dict, permits: Permits) -> AsyncIterator[dict]:
    """Run i is choice i: prompt i // n (`valids`), its choice i % n."""
    chunk = {**meta, "object": "text_completion"}
    echoes = [valids[i // req.n].inputs if req.echo else "" for i in range(len(runs))]
    choices = [TextChoice(echo, len(echo)) for echo in echoes]

    def event(index: int, text: str, logprobs=None, finish: str | None = None) -> dict:
        return sse({**chunk, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                          "finish_reason": finish}]})
    async with permits:  # taken before the response started; released when the stream ends
        async for i, item in merged([infer.stream(run, cut_stop=True) for run in runs]):
            choice = choices[i]
            choice.num_generated = item.num_generated_tokens
            if item.index == 1 and req.echo:
                lp = completion_logprobs(texts, item.prefill, choice.echo, [], [], []) \
                    if req.logprobs is not None else None
                yield event(i, choice.echo, lp)
            lp = None
            if req.logprobs is not None:
                lp = completion_logprobs(texts, [], "", [item.token], [item.top_tokens], [item.text],
                                         start=choice.offset)
            choice.offset += len(item.text)
            if item.text or lp is not None:
                yield event(i, item.text, lp)
            if item.finish_reason is not None:
                yield event(i, "", None, completion_finish(item.finish_reason))
    if req.include_usage:
        num_prompt = sum(len(v.prompt_token_ids) for v in valids)
        yield sse({**chunk, "choices": [], "usage": usage(num_prompt, sum(c.num_generated for c in choices))})


_END = object()


async def merged(streams: list[AsyncIterator[StreamItem]]) -> AsyncIterator[tuple[int, StreamItem]]:
    """Interleave several runs' items as they arrive: (run index, item). Leaving early aborts every run."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[StreamItem]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((index, item))
            queue.put_nowait((index, _END))
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            queue.put_nowait((index, e))
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
