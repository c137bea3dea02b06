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
        # grammars.state.GrammarState when the request is constrained: made here, advanced only by `append`.
        grammar = request.params.grammar
        self.grammar_state: Any = grammar.new_state() if grammar is not None else None
        # One slot per prompt token (the first is never scored), filled by position as prefill chunks run.
        self.prompt_logprobs: list[float | None] | None = \
            [None] * self.num_prompt_tokens if request.params.prompt_logprobs else None
        self.first_event_sent = False
        self.scheduled_at: float | None = None  # time.monotonic() of the first step that ran it
        self.draft: Any = None  # server.speculation.DraftState, made by the speculator on the first decode step

    def append(self, token_id: int, is_eos: bool) -> None:
        """Add a generated token, advancing the grammar (EOS in a final state ends it without an automaton step)."""
        state = self.grammar_state
        if state is not None and not (is_eos and state.can_end()):
            state.advance(token_id)
        self.token_ids.append(token_id)

    def record_prompt_logprobs(self, start: int, logprobs: list[float]) -> None:
        """Logprobs of the prompt tokens at start + 1 ... (scored by the logits at positions start ...)."""
        self.prompt_logprobs[start + 1:start + 1 + len(logprobs)] = logprobs

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt logprobs were asked for and have not been sent yet (they go out with the first event)."""
        return self.prompt_logprobs is not None and not self.first_event_sent

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
