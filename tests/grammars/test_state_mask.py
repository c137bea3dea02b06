"""GrammarState (advance, EOS rule, copy), the engine's cached masks and the batched mask on real logits shapes."""
from __future__ import annotations

import pytest
import torch

from grammars.mask import GrammarMasks, apply_grammar_masks
from grammars.state import GrammarViolation


def _ids(compiler, text: str) -> list[int]:
    by_bytes = {}
    for token_id, data in sorted(compiler.tokens.items()):
        by_bytes.setdefault(data, token_id)
    return [by_bytes[c.encode()] for c in text]


def test_advance_eos_and_violations(compiler):
    grammar = compiler.compile(compiler.parse({"type": "regex", "value": "ab?"}))
    masks = GrammarMasks()
    state = grammar.new_state()
    assert not state.can_end() and not masks.mask(state)[2]
    with pytest.raises(GrammarViolation):
        state.advance(_ids(compiler, "b")[0])
    state.advance(_ids(compiler, "a")[0])
    assert state.can_end() and not state.is_finished()  # "b" may still follow
    state.advance(2)  # EOS where the grammar may end: recorded as the end, not an automaton step
    assert state.is_finished() and masks.mask(state).nonzero().flatten().tolist() == [2]
    with pytest.raises(GrammarViolation):
        state.advance(_ids(compiler, "b")[0])


def test_copy_is_independent_and_masks_are_shared(compiler):
    grammar = compiler.compile(compiler.parse({"type": "regex", "value": "[ab]{3}"}))
    a = grammar.new_state()
    a.advance(_ids(compiler, "a")[0])
    b = a.copy()
    b.advance(_ids(compiler, "b")[0])
    assert a.state != b.state
    masks = GrammarMasks()
    assert masks.mask(a) is masks.mask(a.copy())  # cached per (grammar, automaton state)


def test_apply_masks_rows_and_none(compiler):
    grammar = compiler.compile(compiler.parse({"type": "regex", "value": "[0-9]+"}))
    states = [grammar.new_state(), None, grammar.new_state()]
    logits = torch.randn(3, compiler.vocab_size)
    before = logits.clone()
    masks = GrammarMasks()
    masks.apply(logits, states)
    allowed = masks.mask(states[0])
    assert torch.equal(logits[1], before[1])
    for r in (0, 2):
        assert torch.isinf(logits[r][~allowed]).all() and torch.equal(logits[r][allowed], before[r][allowed])
    digits = {compiler.tokens[i] for i in allowed.nonzero().flatten().tolist()}
    assert digits and all(d.isdigit() for d in digits)


def test_apply_masks_all_none_is_a_no_op(compiler):
    logits = torch.randn(2, compiler.vocab_size)
    before = logits.clone()
    apply_grammar_masks(logits, [None, None])
    assert torch.equal(logits, before)
