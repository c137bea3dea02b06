"""Request parameters -> ValidRequest: TGI's checks in TGI's order with TGI's messages, tokenization, truncation,
token budget, grammar compilation. Compatibility decisions (DESIGN.md): top_p = 1.0 is accepted (off);
frequency/presence penalties follow OpenAI.

Token budget (TGI's validation.rs): only `input + min(max_new_tokens, DEFAULT_GENERATION_LENGTH)` must fit in
max_total_tokens, so clients that send large defaults (`max_new_tokens: 2046`, chat `max_tokens: 100000`) are served;
the sequence then generates up to max_new_tokens or until prompt + generated reaches max_total_tokens, whichever
comes first (finish_reason `length`). TGI reaches the same end by re-queueing 1,024-token segments.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from router.config import Limits
from router.errors import ValidationError
from router.prompt_encoder import PromptEncoder
from router.schemas import GenerateParameters
from server.protocol import SamplingParams, draw_seed

DEFAULT_GENERATION_LENGTH = 1024  # TGI: the part of max_new_tokens that must fit at validation


INLINE_TOKENIZE_CHARS = 1024  # prompts up to this long are tokenized on the event loop (~0.5 ms at most)

@dataclass(frozen=True)
class ValidRequest:
    inputs: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    stop: tuple[str, ...] = ()
    best_of: int = 1
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False
    seed: int | None = None  # reported in details: set exactly when params.is_sampling
    max_new_tokens: int = 20
    received_at: float = 0.0  # time.monotonic(): the request arrived (router.timing)
    validated_at: float = 0.0  # time.monotonic(): validation done, about to be queued


def check_stream(p: GenerateParameters) -> None:
    """The checks TGI makes on streaming routes before anything else (even before the concurrency limit)."""
    if p.best_of is not None and p.best_of != 1:
        raise ValidationError("`best_of` != 1 is not supported when streaming tokens")
    if p.decoder_input_details:
        raise ValidationError("`decoder_input_details` == true is not supported when streaming tokens")


def _asks_for_sampling(p: GenerateParameters) -> bool:
    """TGI's `best_of` precondition (validation.rs): a sampling field is *set*. Whether a request then samples is
    SamplingParams.is_sampling (values, as TGI's engine decides), which also decides whether a seed is reported."""
    return bool(p.do_sample or p.temperature is not None or p.top_k is not None or p.top_p is not None
                or p.typical_p is not None)


def check_parameters(p: GenerateParameters, limits: Limits) -> None:
    """Range checks that need no tokenizer, in TGI's order (first failure wins)."""
    best_of = 1 if p.best_of is None else max(p.best_of, 1)  # TGI checks best_of only when it is > 1: 0 means 1
    if best_of > limits.max_best_of:
        if limits.max_best_of == 1 and best_of != 1:
            raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
        raise ValidationError(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}")
    if best_of > 1 and not _asks_for_sampling(p):
        raise ValidationError("you must use sampling when `best_of` is > 1")
    if p.temperature is not None and p.temperature <= 0:
        raise ValidationError("`temperature` must be strictly positive")
    if p.repetition_penalty is not None and p.repetition_penalty <= 0:
        raise ValidationError("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.presence_penalty is not None and not -2.0 <= p.presence_penalty <= 2.0:
        raise ValidationError("`presence_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p <= 1.0:  # 1.0 accepted (= off): DESIGN.md
        raise ValidationError("`top_p` must be > 0.0 and <= 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    if p.max_new_tokens is not None and p.max_new_tokens == 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
    if len(p.stop) > limits.max_stop_sequences:
        raise ValidationError(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(p.stop)}")
    if p.seed is not None and best_of > 1:
        raise ValidationError("`seed` must not be set when `best_of` > 1")
    top_n = p.top_n_tokens or 0
    if top_n > limits.max_top_n_tokens:
        raise ValidationError(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}")


class Validator:
    def __init__(self, tokenizer, limits: Limits, vocab_size: int, model_id: str,
                 grammar_compiler=None):
        self.tokenizer = tokenizer
        self.encoder = PromptEncoder(tokenizer)
        self.limits = limits
        self.vocab_size = vocab_size
        self.model_id = model_id
        self.grammar_compiler = grammar_compiler  # None: grammars are rejected ("grammar is not supported")

    async def validate(self, inputs: str | list[int], p: GenerateParameters, *, stream: bool = False,
                       add_special_tokens: bool = True, received_at: float | None = None) -> ValidRequest:
        """received_at: when the route got the request (time.monotonic()), if it did work before validating."""
        received_at = time.monotonic() if received_at is None else received_at
        if stream:
            check_stream(p)
        check_parameters(p, self.limits)
        if isinstance(inputs, str) and not inputs:
            raise ValidationError("`inputs` cannot be empty")
        if p.truncate is not None and (p.truncate == 0 or p.truncate > self.limits.max_input_tokens):
            raise ValidationError("`truncate` must be strictly positive and less than "
                                  f"{self.limits.max_input_tokens}. Given: {p.truncate}")
        ids = await self._tokenize(inputs, add_special_tokens)
        if not ids:
            raise ValidationError("`inputs` cannot be empty")
        if p.truncate is not None:
            ids = ids[-p.truncate:]  # TGI keeps the last `truncate` tokens
        max_new_tokens = self._check_lengths(len(ids), p.max_new_tokens)
        self._check_adapter(p.adapter_id)
        grammar = await self._grammar(p)
        text = inputs if isinstance(inputs, str) else self.tokenizer.decode(ids)
        valid = self._build(text, tuple(ids), p, max_new_tokens, grammar)
        return dataclasses.replace(valid, received_at=received_at, validated_at=time.monotonic())

    async def _tokenize(self, inputs: str | list[int], add_special_tokens: bool) -> list[int]:
        if not isinstance(inputs, str):
            bad = [t for t in inputs if not 0 <= t < self.vocab_size]
            if bad:
                raise ValidationError(f"tokenizer error token id {bad[0]} is outside the vocabulary")
            return list(inputs)
        try:  # long prompts off the event loop (they take milliseconds); short ones inline, where the thread hop
            # would cost more than the encoding (a 300-character question: 140 us inline, 290 us through a thread)
            if len(inputs) <= INLINE_TOKENIZE_CHARS:
                return self._encode(inputs, add_special_tokens)
            return await asyncio.to_thread(self._encode, inputs, add_special_tokens)
        except Exception as e:  # noqa: BLE001 - any tokenizer failure is the client's input
            raise ValidationError(f"tokenizer error {e}") from None

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.encoder.encode(text, add_special_tokens)

    def _check_lengths(self, input_len: int, max_new_tokens: int | None) -> int:
        """The max_new_tokens the engine gets: at most what is left of max_total_tokens after the prompt."""
        left = max(self.limits.max_total_tokens - input_len, 0)
        requested = max_new_tokens if max_new_tokens is not None else left
        checked = min(requested, DEFAULT_GENERATION_LENGTH)
        if input_len + checked > self.limits.max_total_tokens:
            raise ValidationError(f"`inputs` tokens + `max_new_tokens` must be <= {self.limits.max_total_tokens}. "
                                  f"Given: {input_len} `inputs` tokens and {checked} `max_new_tokens`")
        if input_len > self.limits.max_input_tokens:
            raise ValidationError(f"`inputs` must have less than {self.limits.max_input_tokens} tokens. "
                                  f"Given: {input_len}")
        return min(requested, left)

    def _check_adapter(self, adapter_id: str | None) -> None:
        # No LoRA adapters are loaded: naming one is an error, not silently the base model (TGI's behaviour).
        if adapter_id is not None and adapter_id not in ("", self.model_id):
            raise ValidationError(f"adapter `{adapter_id}` is not loaded; this server serves only `{self.model_id}`")

    async def _grammar(self, p: GenerateParameters):
        if p.grammar is None:
            return None
        if self.grammar_compiler is None:
            raise ValidationError("grammar is not supported")
        from grammars.compiler import GrammarError
        try:
            return await self.grammar_compiler.compile_async(self.grammar_compiler.parse(p.grammar))
        except GrammarError as e:
            raise ValidationError(str(e)) from None

    def _build(self, text: str, ids: tuple[int, ...], p: GenerateParameters, max_new_tokens: int,
               grammar) -> ValidRequest:
        bias = tuple((int(t), float(b)) for t, b in (p.logit_bias or ()))
        for token_id, _ in bias:
            if not 0 <= token_id < self.vocab_size:
                raise ValidationError(f"`logit_bias` token id {token_id} is outside the vocabulary")
        params = SamplingParams(
            max_new_tokens=max_new_tokens, do_sample=p.do_sample, seed=p.seed,
            temperature=p.temperature if p.temperature is not None else 1.0,
            top_k=p.top_k or 0, top_p=p.top_p if p.top_p is not None else 1.0,
            typical_p=p.typical_p if p.typical_p is not None else 1.0,
            repetition_penalty=p.repetition_penalty if p.repetition_penalty is not None else 1.0,
            frequency_penalty=p.frequency_penalty or 0.0, presence_penalty=p.presence_penalty or 0.0,
            logit_bias=bias, watermark=p.watermark, top_n_tokens=p.top_n_tokens or 0,
            prompt_logprobs=p.decoder_input_details, ignore_eos=p.ignore_eos, grammar=grammar)
        if params.is_sampling and params.seed is None:
            params = dataclasses.replace(params, seed=draw_seed())
        return ValidRequest(text, ids, params, tuple(p.stop), p.best_of or 1, p.details, p.decoder_input_details,
                            bool(p.return_full_text), params.seed if params.is_sampling else None, max_new_tokens)
