"""Sequence: the one mutable per-request state of the engine, and its ordered status.

Token ids are prompt + generated. `num_computed_tokens` counts tokens whose K/V is in the cache; the scheduler feeds
the rest. Per-request objects the sampler needs (seeded generator, grammar state) hang off the sequence, so batch
metadata is rebuilt from the sequences each step and never kept in parallel lists.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any

from server.protocol import EngineRequest, FinishReason, SamplingParams


class SequenceStatus(IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED_EOS = 2
    FINISHED_LENGTH = 3
    FINISHED_ABORTED = 4
    FINISHED_ERROR = 5

    @property
    def is_finished(self) -> bool:
        return self >= SequenceStatus.FINISHED_EOS


FINISH_REASONS = {
    SequenceStatus.FINISHED_EOS: FinishReason.EOS_TOKEN,
    SequenceStatus.FINISHED_LENGTH: FinishReason.LENGTH,
    SequenceStatus.FINISHED_ABORTED: FinishReason.ABORTED,
}


class Sequence:
    def __init__(self, request: EngineRequest, arrival: int):
        self.request_id = request.request_id
        self.params: SamplingParams = request.params
        self.token_ids: list[int] = list(request.prompt_token_ids)
        self.num_prompt_tokens = len(request.prompt_token_ids)
        self.arrival = arrival  # admission order: FIFO and newest-first preemption
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0
        self.num_cached_prompt_tokens = 0  # from the prefix cache at first admission
        self.block_hashes: list[int] = []  # chain hashes of the full blocks already published
        self.num_preemptions = 0
        self.generator: Any = None  # torch.Generator for seeded sampling, created by the sampler
        self.grammar_state: Any = None  # grammars.state.GrammarState when the request is constrained
        self.prompt_logprobs: list[float | None] | None = [None] if request.params.prompt_logprobs else None
        self.first_event_sent = False
        self.scheduled_at: float | None = None  # time.monotonic() of the first step that ran it

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_generated_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def generated_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, {self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")
