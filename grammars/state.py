"""Per-sequence grammar state: where one sequence stands in its grammar's automaton. Plain values, no tensors.

The state is an automaton state id plus an "EOS accepted" flag, read and stepped through the shared outlines-core
`Index` (as outlines-core's `Guide` does internally). Keeping the id ourselves makes `copy()` O(1), while a `Guide`
can only be copied by pickling its whole index. Preemption (recompute) keeps the state object: the generated tokens
are kept, so the automaton position is still right. The engine creates states (`CompiledGrammar.new_state()`) and
advances them; their token masks come from grammars.mask.GrammarMasks.

EOS rule (outlines-core raises on advancing with EOS): EOS sampled where `can_end()` ends the sequence; the
engine does not call `advance` then (calling it anyway just records the end).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # compiled.py imports this module at run time; the dependency only goes that way
    from grammars.compiled import CompiledGrammar

EOS_ACCEPTED = -1  # mask key of a state that has taken EOS (only EOS may follow)


class GrammarViolation(RuntimeError):
    """A token the grammar does not allow reached `advance` (an engine bug: the mask should have stopped it)."""


class GrammarState:
    __slots__ = ("grammar", "state", "eos_accepted")

    def __init__(self, grammar: CompiledGrammar, state: int, eos_accepted: bool = False):
        self.grammar = grammar
        self.state = state
        self.eos_accepted = eos_accepted

    @property
    def mask_key(self) -> int:
        """What the allowed tokens depend on: the automaton state, or EOS_ACCEPTED."""
        return EOS_ACCEPTED if self.eos_accepted else self.state

    def allowed_token_ids(self) -> list[int] | tuple[int, ...]:
        if self.eos_accepted:
            return self.grammar.eos_token_ids
        return self.grammar.allowed_token_ids(self.state)

    def can_end(self) -> bool:
        """EOS is allowed now."""
        return self.eos_accepted or self.grammar.is_final(self.state)

    def is_finished(self) -> bool:
        """EOS was accepted, or the automaton is in a final state that no token can extend."""
        if self.eos_accepted:
            return True
        eos = self.grammar.eos_token_ids
        return self.can_end() and all(t in eos for t in self.grammar.allowed_token_ids(self.state))

    def advance(self, token_id: int) -> None:
        if token_id in self.grammar.eos_token_ids and self.can_end():
            self.eos_accepted = True
            return
        if self.eos_accepted:
            raise GrammarViolation(f"token {token_id} after the grammar's end")
        nxt = self.grammar.next_state(self.state, token_id)
        if nxt is None:
            raise GrammarViolation(f"token {token_id} is not allowed by the grammar in state {self.state}")
        self.state = nxt

    def copy(self) -> GrammarState:
        return GrammarState(self.grammar, self.state, self.eos_accepted)

    def __repr__(self) -> str:
        return f"GrammarState(state={self.state}, can_end={self.can_end()}, eos_accepted={self.eos_accepted})"
