"""Non-streaming requests without stop strings are decoded in one pass at the end (Infer._collect_at_end): the same
Generation as the per-item path (Infer.stream, then collect's fold), on the real tokenizer, over random token ids
(byte pieces and broken characters included), EOS, top tokens, prompt logprobs, and the engine's error event."""
from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from router.errors import GenerationError
from router.infer import Generation, Infer
from router.validation import ValidRequest
from server.protocol import FinishReason, SamplingParams, TokenEvent, TopToken


class ScriptedClient:
    """generate() hands out a prepared list of events (as EngineClient.generate does, live or not)."""

    def __init__(self, events: list[TokenEvent]):
        self.events = events

    async def generate(self, request, live: bool = True):
        for event in self.events:
            yield event


def events_for(ids: list[int], eos: int, rng: random.Random, prompt_len: int) -> list[TokenEvent]:
    events = []
    for k, token in enumerate(ids):
        last = k == len(ids) - 1
        tops = tuple(TopToken(rng.randrange(1000), -rng.random()) for _ in range(2))
        events.append(TokenEvent(
            "r", token, -rng.random(), tops, (FinishReason.EOS_TOKEN if token == eos else FinishReason.LENGTH)
            if last else None, num_prompt_tokens=prompt_len, is_special=token == eos,
            prompt_logprobs=(None,) + (-0.5,) * (prompt_len - 1) if k == 0 else None, emitted_at=1.0))
    return events


def per_item(infer: Infer, valid: ValidRequest) -> Generation:
    """What collect gave before the one-pass path: a StreamItem per event, folded."""
    async def run():
        tokens, tops, prefill = [], [], []
        async with contextlib.aclosing(infer.stream(valid)) as items:
            async for item in items:
                tokens.append(item.token)
                tops.append(list(item.top_tokens))
                prefill = prefill or list(item.prefill)
                last = item
        return Generation(last.generated_text, last.text_before_stop, last.stop_sequence, last.finish_reason,
                          tokens, tops, prefill, last.num_prompt_tokens, len(tokens), valid.seed, last.timing)
    return asyncio.run(run())


def test_one_pass_gives_the_per_item_generation(tokenizer):
    rng = random.Random(0)
    prompt = tuple(tokenizer("Question: what is 3 + 4?\nAnswer:")["input_ids"])
    eos = tokenizer.eos_token_id
    texts = ["The answer is 7.", "naïve café — 東京 ✓ 🎉 done", "  two  spaces\nnew line\tand tab"]
    sequences = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    sequences += [[rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(1, 40))] for _ in range(60)]
    sequences += [s + [eos] for s in sequences[:5]]
    for ids in sequences:
        events = events_for(ids, eos, rng, len(prompt))
        valid = ValidRequest("x", prompt, SamplingParams(max_new_tokens=len(ids)), details=True,
                             max_new_tokens=len(ids), decoder_input_details=True)
        infer = Infer(ScriptedClient(events), tokenizer, 10)
        fast = asyncio.run(infer.collect(valid))
        slow = per_item(infer, valid)
        fast.timing = slow.timing = None  # clock readings
        assert fast == slow, ids
        assert fast.prefill and len(fast.tokens) == len(ids)


def test_one_pass_raises_the_engine_error_and_a_missing_finish(tokenizer):
    prompt = tuple(tokenizer("Hi")["input_ids"])
    valid = ValidRequest("Hi", prompt, SamplingParams(max_new_tokens=4), max_new_tokens=4)
    failing = Infer(ScriptedClient([TokenEvent("r", 5, -0.1), TokenEvent("r", error="out of memory")]), tokenizer, 10)
    with pytest.raises(GenerationError, match="out of memory"):
        asyncio.run(failing.collect(valid))
    unfinished = Infer(ScriptedClient([TokenEvent("r", 5, -0.1)]), tokenizer, 10)
    with pytest.raises(GenerationError, match="without a finish reason"):
        asyncio.run(unfinished.collect(valid))
