"""The second grammar engine, llguidance, for JSON schemas with unconstrained values (`{}`, pydantic's `Any`,
`{"type": "object"}` without properties, `{"type": "array"}` without items), and the top-level any-JSON.

Why a second engine: outlines-core builds the whole token automaton up front, and an unconstrained value is a large
nested automaton (each one 0.35-1.4 s at vocabulary 32k, a 35 MB pickled Index for any-JSON, ~0.4 s to bring back
from the worker). llguidance (an Earley parser over a lazy lexer) builds masks as generation goes: ~1 ms to
"compile" any schema, no depth bound on the values, ~45 us per mask at vocabulary 32k. Outlines keeps every other
schema and all regexes: its per-step cost is a cached mask per automaton state (a few microseconds a row).

`LLGuidanceGrammar` and `LLGuidanceState` offer what the engine and `grammars.mask` use of `CompiledGrammar` /
`GrammarState` (new_state, eos_token_ids; mask_key, allowed_token_ids, can_end, is_finished, advance, copy), as plain
values: no tensors cross the engine seam. A parser state has no small id to cache a mask under, so its `mask_key` is
None and `GrammarMasks` turns its packed `bitmask()` into a tensor each step. EOS follows our rule: the model's EOS
ids are allowed exactly where the parser accepts.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from grammars.spec import GrammarError, GrammarSpec, regex_of
from grammars.state import GrammarViolation

# One leading space (SentencePiece models open text with "▁{"), compact JSON otherwise: llguidance's flexible
# whitespace would let a weak model loop on spaces.
_LARK = 'start: " "? body\nbody: %json {schema}'


def available() -> bool:
    try:
        import llguidance  # noqa: F401
        import llguidance.hf  # noqa: F401
    except ImportError:
        return False
    return True


class LLGuidanceTokenizers:
    """The llguidance tokenizer for one HF tokenizer, made on first use (~0.7 s at vocabulary 32k)."""

    def __init__(self, tokenizer, vocab_size: int):
        self._hf, self._vocab_size = tokenizer, vocab_size
        self._made = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._made is None:
                import llguidance.hf

                self._made = llguidance.hf.from_tokenizer(self._hf, n_vocab=self._vocab_size)
            return self._made


def build(spec: GrammarSpec, tokenizers: LLGuidanceTokenizers, vocab_size: int,
          eos_token_ids: tuple[int, ...]) -> LLGuidanceGrammar:
    """A JSON spec -> LLGuidanceGrammar; GrammarError when llguidance refuses the schema."""
    import llguidance

    schema: dict[str, Any] = json.loads(spec.value)
    schema = {**schema, "x-guidance": {"whitespace_flexible": False, **schema.get("x-guidance", {})}}
    grammar = llguidance.LLMatcher.grammar_from_lark(_LARK.format(schema=json.dumps(schema)))
    tokenizer = tokenizers.get()
    error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    if error:
        raise GrammarError(f"cannot compile regex from schema: {error.strip().splitlines()[-1]}")
    return LLGuidanceGrammar(spec, grammar, tokenizer, vocab_size, eos_token_ids)


class LLGuidanceGrammar:
    engine = "llguidance"

    def __init__(self, spec: GrammarSpec, grammar: str, tokenizer, vocab_size: int, eos_token_ids: tuple[int, ...]):
        self.spec = spec
        # For logs and prefix checks only: outlines' regex of the same schema (bounded depth: a subset of what
        # llguidance allows). Building the string is cheap; no automaton is made from it.
        self.regex = regex_of(spec)
        self.grammar = grammar
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids

    def new_state(self) -> LLGuidanceState:
        import llguidance

        return LLGuidanceState(self, llguidance.LLMatcher(self.tokenizer, self.grammar))

    def __repr__(self) -> str:
        return f"LLGuidanceGrammar(kind={self.spec.kind!r}, grammar_chars={len(self.grammar)})"


def _set_bits(words: bytearray, token_ids, value: bool) -> None:
    """Packed little-endian int32 words: bit j of word i is token 32 i + j."""
    for t in token_ids:
        byte, bit = divmod(t, 8)
        if value:
            words[byte] |= 1 << bit
        else:
            words[byte] &= ~(1 << bit) & 0xFF


class LLGuidanceState:
    __slots__ = ("grammar", "matcher", "eos_accepted", "_bits")

    mask_key = None  # no automaton state id: GrammarMasks builds this state's mask from bitmask() each step

    def __init__(self, grammar: LLGuidanceGrammar, matcher, eos_accepted: bool = False):
        self.grammar = grammar
        self.matcher = matcher
        self.eos_accepted = eos_accepted
        self._bits: bytearray | None = None  # packed mask of the current position, made on first use

    def bitmask(self) -> bytearray:
        """The allowed tokens packed as int32 words (ceil(vocab / 32) of them); EOS ids set exactly where the parser
        accepts. Shared until the next advance: do not modify it."""
        if self._bits is None:
            eos = self.grammar.eos_token_ids
            if self.eos_accepted:
                bits = bytearray(4 * -(-self.grammar.vocab_size // 32))
                _set_bits(bits, eos, True)
            else:
                bits = bytearray(self.matcher.compute_bitmask())
                _set_bits(bits, eos, self.matcher.is_accepting())
                if not any(bits):
                    _set_bits(bits, eos, True)  # a dead end: end rather than sample from NaN
            self._bits = bits
        return self._bits

    def allowed_token_ids(self) -> list[int]:
        value = int.from_bytes(self.bitmask(), "little")
        return [t for t in range(self.grammar.vocab_size) if value >> t & 1]

    def can_end(self) -> bool:
        return self.eos_accepted or self.matcher.is_accepting()

    def is_finished(self) -> bool:
        if self.eos_accepted:
            return True
        if not self.can_end():
            return False
        others = bytearray(self.bitmask())
        _set_bits(others, self.grammar.eos_token_ids, False)
        return not any(others)

    def advance(self, token_id: int) -> None:
        if token_id in self.grammar.eos_token_ids and self.can_end():
            self.eos_accepted = True
            self._bits = None
            return
        if self.eos_accepted:
            raise GrammarViolation(f"token {token_id} after the grammar's end")
        if not self.matcher.consume_token(token_id) or self.matcher.is_error():
            raise GrammarViolation(f"token {token_id} is not allowed by the grammar: {self.matcher.get_error()}")
        self._bits = None

    def copy(self) -> LLGuidanceState:
        return LLGuidanceState(self.grammar, self.matcher.deep_copy(), self.eos_accepted)

    def __repr__(self) -> str:
        return f"LLGuidanceState(can_end={self.can_end()}, eos_accepted={self.eos_accepted})"
