"""Token masks from grammar states: logits outside each constrained row's allowed tokens become -inf, in place.

`GrammarMasks` is the engine's (one per device): it builds a state's `(vocab_size,)` bool mask once and reuses it for
every sequence that reaches the state, so the per-token path builds no Python lists. Masks are cached per grammar
(dropped with the grammar when the compiler's cache lets it go) and per automaton state, oldest evicted first.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

from grammars.compiled import CompiledGrammar
from grammars.state import GrammarState

MAX_CACHED_MASKS = 4096  # per grammar; a 32k vocabulary makes each mask 32 KB


class GrammarMasks:
    def __init__(self, device: torch.device | str = "cpu", max_cached: int = MAX_CACHED_MASKS):
        self.device = torch.device(device)
        self.max_cached = max_cached
        self._masks: weakref.WeakKeyDictionary[CompiledGrammar, OrderedDict[int, torch.Tensor]] = \
            weakref.WeakKeyDictionary()

    def mask(self, state: GrammarState) -> torch.Tensor:
        """(vocab_size,) bool, True where a token may follow; shared between states: do not modify it."""
        key = state.mask_key
        if key is None:  # a parser state (llguidance) without an automaton id: nothing to cache it under
            return _unpack(state.bitmask(), state.grammar.vocab_size).to(self.device)
        cache = self._masks.setdefault(state.grammar, OrderedDict())
        mask = cache.get(key)
        if mask is None:
            mask = torch.zeros(state.grammar.vocab_size, dtype=torch.bool)
            mask[list(state.allowed_token_ids())] = True
            mask = mask.to(self.device)
            if len(cache) >= self.max_cached:
                cache.popitem(last=False)  # oldest first
            cache[key] = mask
        return mask

    def apply(self, logits: torch.Tensor, states: list[GrammarState | None]) -> None:
        """logits (num_rows, vocab), one state per row (None: unconstrained, left untouched).

        Stacks the rows' cached masks (an all-True row for unconstrained ones) and applies one masked_fill_.
        """
        assert logits.shape[0] == len(states), (logits.shape, len(states))
        if all(s is None for s in states):
            return
        free = None
        rows = []
        for s in states:
            if s is None:
                if free is None:
                    free = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
                rows.append(free)
            else:
                rows.append(self.mask(s))
        allowed = torch.stack(rows)  # (num_rows, vocab) bool
        assert allowed.shape == logits.shape, f"grammar vocab {allowed.shape[1]} != logits width {logits.shape[1]}"
        logits.masked_fill_(~allowed, float("-inf"))


_BITS = torch.arange(32, dtype=torch.int32)


def _unpack(words: bytearray, vocab_size: int) -> torch.Tensor:
    """Packed int32 words (bit j of word i is token 32 i + j) -> (vocab_size,) bool."""
    packed = torch.frombuffer(bytearray(words), dtype=torch.int32)  # (ceil(vocab / 32),)
    return ((packed.unsqueeze(1) >> _BITS) & 1).flatten()[:vocab_size].bool()


def apply_grammar_masks(logits: torch.Tensor, states: list[GrammarState | None],
                        masks: GrammarMasks | None = None) -> None:
    """One-off form of GrammarMasks.apply (tests, scripts): without `masks`, nothing is cached across calls."""
    (masks or GrammarMasks(logits.device)).apply(logits, states)
