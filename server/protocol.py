"""Boundary types between the router (asyncio, no tensors) and the engine (one thread, all tensors).

Everything that crosses the boundary is a frozen dataclass of plain Python values. The engine knows nothing
about text: requests arrive as token ids and leave as token events; detokenization and stop strings are the
router's job.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def draw_seed() -> int:
    """A fresh random seed for a sampling request that gave none (the one place seeds are drawn)."""
    return secrets.randbits(63)


class FinishReason(str, Enum):
    """Why a sequence ended. Values are TGI's wire strings."""

    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"  # set by the router when a stop string matched (it then aborts)
    ABORTED = "aborted"  # client went away or the router aborted; never sent to a client as a finish reason


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings, already validated by the router.

    Neutral values switch a stage off: temperature 1.0, top_k 0, top_p 1.0, typical_p 1.0, penalties 1.0 / 0.0.
    """

    max_new_tokens: int = 20
    do_sample: bool = False
    seed: int | None = None  # used only when sampling; the router draws one when the client gave none
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0  # HF/CTRL rule over prompt + generated tokens
    frequency_penalty: float = 0.0  # OpenAI: logit -= f * count(token in generated)
    presence_penalty: float = 0.0  # OpenAI: logit -= p * (count > 0)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to logits
    watermark: bool = False
    top_n_tokens: int = 0  # alternatives returned per generated token
    prompt_logprobs: bool = False  # logprob of every prompt token (first is None); bypasses the prefix cache
    stop_token_ids: tuple[int, ...] = ()  # EOS ids; empty means the model's own
    ignore_eos: bool = False
    # A grammars.compiled.CompiledGrammar (plain values: the outlines-core index, no tensors), or None. The engine
    # makes each sequence's state from it and keeps the token masks.
    grammar: Any = None

    @property
    def is_sampling(self) -> bool:
        """The one rule (TGI's): do_sample, or any warper away from its neutral value, samples; else greedy. The
        router reports a seed exactly when this holds."""
        return (self.do_sample or self.temperature != 1.0 or self.top_k != 0
                or self.top_p < 1.0 or self.typical_p < 1.0)


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class TopToken:
    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenEvent:
    """One generated token of one request, or the request's failure.

    `prompt_logprobs` is set on the first event only (when asked for): one value per prompt token, the first None.
    `finish_reason` is set on the last event. `error` set means the request failed: no token, and it is the last event.
    """

    request_id: str
    token_id: int = -1
    logprob: float = 0.0
    top_tokens: tuple[TopToken, ...] = ()
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache (set on the first event)
    prompt_logprobs: tuple[float | None, ...] | None = None
    error: str | None = None
    is_special: bool = False  # the token is one of the stop (EOS) ids
    # time.monotonic() when the engine first put the request in a batch (TGI's `start`; prefill runs after it)
    scheduled_at: float = 0.0
    # time.monotonic() when the engine made this event; set on the first event only (time to first token, also
    # when the router reads the events later)
    emitted_at: float = 0.0


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of engine state, for /health and /metrics."""

    num_waiting: int
    num_running: int
    num_blocks_used: int
    num_blocks_total: int
    block_size: int
    alive: bool
    seconds_since_last_step: float  # time since the loop last finished a step (0 when idle and healthy)
    num_steps: int = 0
    num_prefill_tokens_total: int = 0
    num_decode_tokens_total: int = 0
    num_draft_tokens_proposed_total: int = 0  # speculation: draft tokens verified, and those kept
    num_draft_tokens_accepted_total: int = 0
    logits_finite: bool = True  # False from a step whose logits held NaN/inf until a later step's are all finite


@dataclass(frozen=True)
class StepInfo:
    """One engine step, for batch metrics. `method` is "prefill" when any prompt chunk ran, else "decode"."""

    method: str
    num_seqs: int
    num_tokens: int
    forward_s: float  # model forward + logits
    sample_s: float  # logits pipeline, sampling, postprocess
    total_s: float
    ok: bool
    num_draft_tokens: int = 0  # speculation: draft tokens verified this step, and those kept
    num_accepted_tokens: int = 0


@dataclass(frozen=True)
class EngineInfo:
    """What the router needs to know about the engine it talks to, read once at start-up."""

    model_id: str
    model_path: str  # the checkpoint folder (chat templates are read from it)
    vocab_size: int  # logits width: valid token ids are below it
    eos_token_ids: tuple[int, ...]
    max_total_tokens: int  # prompt + generated tokens one sequence may reach in this engine
    device: str
    speculate: int = 0  # --speculate: most draft tokens verified per sequence and step (0: off)


@dataclass(frozen=True)
class WatermarkDetection:
    """The watermark z-test on a text's token ids, with the engine's green-list fraction and bias."""

    z_score: float
    p_value: float
    green_fraction: float
    num_tokens_scored: int
    gamma: float
    delta: float
