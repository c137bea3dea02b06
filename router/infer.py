"""Running validated requests on the engine: the concurrency limit (429), token events -> text with stop strings,
best_of fan-out, and abort on early exit (a client disconnect closes the stream, which aborts the sequence).
Every sequence that finishes records TGI's request histograms here (router.metrics), whichever route ran it; a
best_of request records its winner only.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from router.detokenizer import IncrementalDetokenizer, StopMatcher, TokenTexts
from router.errors import GenerationError, OverloadedError, ValidationError
from router.timing import Timing
from router.validation import ValidRequest
from server.protocol import EngineRequest, FinishReason, TokenEvent, draw_seed


@dataclass(frozen=True)
class TokenInfo:
    id: int
    text: str
    logprob: float | None  # finite or None: -inf (a token top-k masked out) is None, as serde_json writes it (TGI)
    special: bool = False

    def __post_init__(self):
        if self.logprob is not None and not math.isfinite(self.logprob):
            object.__setattr__(self, "logprob", None)


@dataclass(frozen=True)
class StreamItem:
    index: int  # 1-based
    token: TokenInfo  # token.text: this token's text delta (the literal text for special tokens)
    text: str  # visible delta (differs from token.text only around stop strings)
    top_tokens: tuple[TokenInfo, ...] = ()
    finish_reason: FinishReason | None = None  # last item only
    generated_text: str | None = None  # last item only
    text_before_stop: str | None = None  # last item only
    stop_sequence: str | None = None
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    seed: int | None = None
    prefill: tuple[TokenInfo, ...] = ()  # first item only, when prompt logprobs were asked for
    time_to_first_token_s: float = 0.0
    timing: Timing | None = None  # last item only


@dataclass
class Generation:
    generated_text: str
    text_before_stop: str
    stop_sequence: str | None
    finish_reason: FinishReason
    tokens: list[TokenInfo]
    top_tokens: list[list[TokenInfo]]
    prefill: list[TokenInfo]
    num_prompt_tokens: int
    num_generated_tokens: int
    seed: int | None
    timing: Timing
    best_of_sequences: list["Generation"] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        values = [t.logprob for t in self.tokens if t.logprob is not None]
        return sum(values) / len(values) if values else float("-inf")


_REQUEST_IDS = itertools.count()


def next_request_id() -> str:
    """A process-unique engine request id. A counter, not uuid4: os.urandom is a system call that drops the GIL,
    and getting it back while the engine thread runs Python can take a switch interval, per request."""
    return f"rho-{next(_REQUEST_IDS):x}"


def token_info(texts: TokenTexts, token_id: int, logprob: float | None) -> TokenInfo:
    """A token out of context (top tokens, prefill): its text decoded alone, as TGI does."""
    return TokenInfo(token_id, texts.text(token_id), logprob, token_id in texts.special_ids)


class Permits:
    """Concurrency permits held by one request (one per engine sequence); `release` is idempotent.

    A stream takes them before its response starts and keeps them: `hand_over()` moves them to the event generator,
    which holds them with `async with permits:` until it ends or is closed. A generator that never started (its client
    left before the first event) releases them when it is garbage-collected (`__del__`).
    """

    def __init__(self, infer: "Infer", num_sequences: int):
        self.infer, self.num_sequences, self.released = infer, num_sequences, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.infer.num_in_flight -= self.num_sequences

    def hand_over(self) -> "Permits":
        taken = Permits(self.infer, self.num_sequences)
        self.released = True  # now counted by `taken` only
        return taken

    async def __aenter__(self) -> "Permits":
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()


class Infer:
    def __init__(self, client, tokenizer, max_concurrent_requests: int, metrics=None):
        self.client = client
        self.tokenizer = tokenizer
        self.texts = TokenTexts(tokenizer)
        self.max_concurrent_requests = max_concurrent_requests
        self.metrics = metrics
        self.num_in_flight = 0

    def acquire(self, num_sequences: int = 1) -> "Permits":
        """One permit per engine sequence, all at once, or OverloadedError (TGI's non-blocking try_acquire).

        The budget: at most max_concurrent_requests engine sequences run, whatever the requests (best_of, n, several
        prompts). A request that needs more than the whole budget can never run: a 422 that says so.
        """
        if num_sequences > self.max_concurrent_requests:
            raise ValidationError(f"this request runs {num_sequences} sequences at once, more than this server's "
                                  f"limit of {self.max_concurrent_requests} (--max-concurrent-requests)")
        if self.num_in_flight + num_sequences > self.max_concurrent_requests:
            raise OverloadedError()
        self.num_in_flight += num_sequences
        return Permits(self, num_sequences)

    @contextlib.asynccontextmanager
    async def slot(self, num_sequences: int = 1) -> AsyncIterator[Permits]:
        """`acquire` for the length of a block (unless handed over to a stream)."""
        permits = self.acquire(num_sequences)
        try:
            yield permits
        finally:
            permits.release()

    async def stream(self, valid: ValidRequest, cut_stop: bool = False, observe: bool = True
                     ) -> AsyncIterator[StreamItem]:
        """Token items of one sequence, as the engine makes them; the last has finish_reason, generated_text and
        timing. Raises GenerationError. observe: record the request histograms when it finishes."""
        request = EngineRequest(next_request_id(), valid.prompt_token_ids, valid.params)
        decoder = _Decoder(self, valid, cut_stop, observe)
        async with contextlib.aclosing(self.client.generate(request)) as events:
            async for event in events:
                item = decoder.step(event)
                yield item
                if item.finish_reason is not None:
                    return  # leaving closes `events`, which aborts the sequence if the engine is not done
        raise GenerationError("the engine ended the sequence without a finish reason")

    async def generate(self, valid: ValidRequest, cut_stop: bool = False) -> Generation:
        if valid.best_of <= 1:
            return await self.collect(valid, cut_stop)
        results = await gather_or_cancel(self.collect(r, cut_stop, observe=False)
                                         for r in fan_out(valid, valid.best_of))
        best = max(range(len(results)), key=lambda i: results[i].mean_logprob)
        winner = results[best]
        winner.best_of_sequences = [r for i, r in enumerate(results) if i != best]
        if self.metrics is not None:
            self.metrics.observe_generation(winner.timing, winner.num_prompt_tokens, valid.max_new_tokens,
                                            winner.num_generated_tokens)
        return winner

    async def collect(self, valid: ValidRequest, cut_stop: bool = False, observe: bool = True) -> Generation:
        if not valid.stop:  # nothing can end it early: its events come at once, decoded in one pass
            return await self._collect_at_end(valid, observe)
        tokens, tops, prefill = [], [], []
        async for item in self.stream(valid, cut_stop, observe):
            tokens.append(item.token)
            tops.append(list(item.top_tokens))
            prefill = prefill or list(item.prefill)
            last = item
        return Generation(last.generated_text or "", last.text_before_stop or "", last.stop_sequence,
                          last.finish_reason, tokens, tops, prefill, last.num_prompt_tokens, len(tokens),
                          valid.seed, last.timing)

    async def _collect_at_end(self, valid: ValidRequest, observe: bool) -> Generation:
        """`collect` without stop strings: the engine wakes this request once, with all its events (live=False),
        and they are turned into the Generation without a StreamItem per token (the same tokens and text)."""
        request = EngineRequest(next_request_id(), valid.prompt_token_ids, valid.params)
        decoder = _Decoder(self, valid, False, observe)
        events: list[TokenEvent] = []
        async with contextlib.aclosing(self.client.generate(request, live=False)) as stream:
            async for event in stream:
                events.append(event)
                if event.finish_reason is not None or event.error is not None:
                    break  # leaving closes `stream`, which aborts the sequence if the engine is not done
        return decoder.generation(events)


def fan_out(valid: ValidRequest, n: int, base_seed: int | None = None) -> list[ValidRequest]:
    """n independent runs of one request (best_of, OpenAI's n): run i samples with base_seed + i, or without a base
    with the request's seed (i = 0) and fresh ones. Greedy requests run unchanged (no seed)."""
    runs = []
    for i in range(n):
        seed = valid.params.seed
        if valid.params.is_sampling:
            seed = base_seed + i if base_seed is not None else (seed if i == 0 else draw_seed())
        runs.append(dataclasses.replace(valid, params=dataclasses.replace(valid.params, seed=seed),
                                        seed=seed if valid.params.is_sampling else None))
    return runs


async def gather_or_cancel(coroutines) -> list:
    """gather, but a failure cancels the other runs at once (their engine sequences are aborted)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


class _Decoder:
    """Turns one sequence's TokenEvents into StreamItems: detokenize, match stops, count, time."""

    def __init__(self, infer: Infer, valid: ValidRequest, cut_stop: bool, observe: bool):
        self.texts = infer.texts
        self.metrics = infer.metrics
        self.observe = observe
        self.valid = valid
        self.detok = IncrementalDetokenizer(infer.tokenizer, valid.prompt_token_ids)
        self.stops = StopMatcher(valid.stop, cut=cut_stop)
        self.index = 0
        self.num_prompt_tokens = len(valid.prompt_token_ids)
        self.num_cached = 0
        self.queued_at = time.monotonic()  # submitted to the engine right after this decoder is made
        self.scheduled_at = self.queued_at
        self.ttft = 0.0
        self.prefill: tuple[TokenInfo, ...] = ()  # from the first event, when prompt logprobs were asked for

    def step(self, event: TokenEvent) -> StreamItem:
        token, delta, tops = self._token(event)
        visible, stop = self.stops.feed(delta)
        finish = event.finish_reason or (FinishReason.STOP_SEQUENCE if stop else None)
        if finish is not None and stop is None:
            visible += self.stops.flush()
        done = finish is not None
        timing = self._finished() if done else None
        return StreamItem(
            self.index, token, visible, tops, finish,
            self.stops.output if done else None, self.stops.text_before_stop if done else None,
            stop if done else None, self.num_prompt_tokens, self.num_cached, self.index, self.valid.seed,
            self.prefill if self.index == 1 else (), self.ttft, timing)

    def generation(self, events: list[TokenEvent]) -> Generation:
        """A whole sequence without stop strings at once: what `step` per event, then `collect`, would give."""
        tokens, tops, pieces = [], [], []
        for event in events:
            token, delta, top = self._token(event)
            tokens.append(token)
            tops.append(list(top))
            pieces.append(delta)
        if not events or events[-1].finish_reason is None:
            raise GenerationError("the engine ended the sequence without a finish reason")
        text = "".join(pieces)
        return Generation(text, text, None, events[-1].finish_reason, tokens, tops, list(self.prefill),
                          self.num_prompt_tokens, len(tokens), self.valid.seed, self._finished())

    def _token(self, event: TokenEvent) -> tuple[TokenInfo, str, tuple[TokenInfo, ...]]:
        """One event -> (its token, the text it completes, its top tokens); raises the engine's error."""
        if event.error is not None:
            raise GenerationError(event.error)
        self.index += 1
        if self.index == 1:
            self.prefill = self._first(event)
        delta = self.detok.add(event.token_id, event.is_special)
        if event.finish_reason is not None:
            delta += self.detok.flush()
        token_text = self.texts.text(event.token_id) if event.is_special else delta
        token = TokenInfo(event.token_id, token_text, event.logprob, event.is_special)
        return token, delta, tuple(token_info(self.texts, t.token_id, t.logprob) for t in event.top_tokens)

    def _finished(self) -> Timing:
        timing = Timing(self.valid.received_at or self.queued_at, self.queued_at, self.scheduled_at,
                        time.monotonic())
        if self.metrics is not None:
            self.metrics.observe_sequence(self.ttft, self.index)
            if self.observe:
                self.metrics.observe_generation(timing, self.num_prompt_tokens, self.valid.max_new_tokens,
                                                self.index)
        return timing

    def _first(self, event: TokenEvent) -> tuple[TokenInfo, ...]:
        # The engine's stamp: a non-live request reads its first event only when the sequence has ended.
        self.ttft = max(0.0, (event.emitted_at or time.monotonic()) - self.queued_at)
        # Engines that predate the stamp (test fakes) send 0: the queue time is then unknown and counted as 0.
        self.scheduled_at = min(max(event.scheduled_at, self.queued_at), time.monotonic())
        self.num_prompt_tokens = event.num_prompt_tokens or self.num_prompt_tokens
        self.num_cached = event.num_cached_prompt_tokens
        if event.prompt_logprobs is None:
            return ()
        return tuple(token_info(self.texts, t, lp) for t, lp in zip(self.valid.prompt_token_ids, event.prompt_logprobs))
