"""A compiled grammar: the outlines-core `Index` for one (grammar, tokenizer), shared by every request using it.

It also owns the per-automaton-state cache of allowed-token masks, so the per-token path builds no Python lists:
a state's mask is made once (from the index's allowed tokens) and reused by every sequence that reaches the state.
"""
from __future__ import annotations

import torch
from outlines_core import Index

from grammars.spec import GrammarSpec

MAX_CACHED_MASKS = 4096  # per grammar and device; a 32k vocabulary makes each mask 32 KB


class CompiledGrammar:
    def __init__(self, spec: GrammarSpec, regex: str, index: Index, vocab_size: int,
                 eos_token_ids: tuple[int, ...]):
        self.spec = spec
        self.regex = regex
        self.index = index
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.initial_state: int = index.get_initial_state()
        self.final_states: frozenset[int] = frozenset(index.get_final_states())
        self._masks: dict[tuple[int, str], torch.Tensor] = {}  # (state, device) -> (vocab_size,) bool

    def new_state(self):
        from grammars.state import GrammarState

        return GrammarState(self, self.initial_state)

    def next_state(self, state: int, token_id: int) -> int | None:
        """The automaton state after token_id, or None when the grammar does not allow it."""
        return self.index.get_next_state(state, token_id)

    def is_final(self, state: int) -> bool:
        return state in self.final_states

    def allowed_mask(self, state: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(vocab_size,) bool, True where a token may follow; EOS ids are allowed exactly in final states."""
        key = (state, str(device))
        mask = self._masks.get(key)
        if mask is None:
            mask = self._build_mask(state).to(device)
            if len(self._masks) >= MAX_CACHED_MASKS:
                self._masks.pop(next(iter(self._masks)))  # oldest first
            self._masks[key] = mask
        return mask

    def eos_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[list(self.eos_token_ids)] = True
        return mask.to(device)

    def _build_mask(self, state: int) -> torch.Tensor:
        allowed = self.index.get_allowed_tokens(state) or []
        ids = torch.tensor([t for t in allowed if t < self.vocab_size], dtype=torch.long)
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[ids] = True
        # The index knows one EOS id; a model may have several (Llama 3). Final states allow all, others none.
        mask[list(self.eos_token_ids)] = self.is_final(state)
        if not mask.any():
            mask = self.eos_mask()  # a dead end (the vocabulary cannot continue): end rather than sample from NaN
        return mask

    def __repr__(self) -> str:
        return f"CompiledGrammar(kind={self.spec.kind!r}, regex_chars={len(self.regex)})"
