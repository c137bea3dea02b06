"""A compiled grammar: the outlines-core `Index` for one (grammar, tokenizer), shared by every request using it.

Plain values only (no tensors): it crosses from the router, which compiles it, to the engine, which masks logits
with it. The engine keeps the per-state token masks (grammars.mask.GrammarMasks) and the per-sequence positions
(grammars.state.GrammarState, made by `new_state()`).
"""
from __future__ import annotations

from outlines_core import Index

from grammars.spec import GrammarSpec
from grammars.state import GrammarState


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

    def new_state(self) -> GrammarState:
        return GrammarState(self, self.initial_state)

    def next_state(self, state: int, token_id: int) -> int | None:
        """The automaton state after token_id, or None when the grammar does not allow it."""
        return self.index.get_next_state(state, token_id)

    def is_final(self, state: int) -> bool:
        return state in self.final_states

    def allowed_token_ids(self, state: int) -> list[int]:
        """Ids that may follow `state`. EOS ids are allowed exactly in final states: the index knows one EOS id, a
        model may have several (Llama 3). At a dead end (the vocabulary cannot continue) only EOS: end rather than
        sample from NaN."""
        eos = self.eos_token_ids
        ids = [t for t in self.index.get_allowed_tokens(state) or [] if t < self.vocab_size and t not in eos]
        if self.is_final(state) or not ids:
            ids.extend(eos)
        return ids

    def __repr__(self) -> str:
        return f"CompiledGrammar(kind={self.spec.kind!r}, regex_chars={len(self.regex)})"
