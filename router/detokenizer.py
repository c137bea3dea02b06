"""Incremental detokenization (prefix/read offsets), stop-string matching over the decoded text, and the one cache
of per-token text (`TokenTexts`).

Decoding token by token mangles spaces and multi-byte characters, so each step decodes a short window and emits
what it adds; text ending in an incomplete UTF-8 character ("\ufffd") is held back until the next token completes it.
Stop strings are searched in the accumulated text, so a stop that starts or ends inside a token still matches.
"""
from __future__ import annotations

import re

PROMPT_CONTEXT = 5  # prompt tokens kept in the window so the first generated token decodes with its leading space
REPLACEMENT = "\ufffd"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TokenTexts:
    """Each token's text out of context, cached per id (skip_special_tokens=False: special tokens show as written),
    in the two forms its users need, which differ for SentencePiece tokenizers (they drop the space of a text's
    first token: "▁Hello" alone decodes as "Hello"):
    - `text`: the token decoded alone, as TGI decodes top tokens, prefill and special tokens (TGI parity);
    - `piece`: the token's own text with its leading space (OpenAI logprobs): decoded after an anchor token that is
      then cut off; `bytes`: its UTF-8 bytes, exact for byte-fallback pieces (`<0xE2>`).
    A generated token's text in the output is neither: the incremental detokenizer gives it (context, held-back
    incomplete characters)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
        self.anchor_text = self._decode([self.anchor])
        self._texts: dict[int, str] = {}
        self._pieces: dict[int, str] = {}

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def text(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._decode([token_id])
        return text

    def piece(self, token_id: int) -> str:
        text = self._pieces.get(token_id)
        if text is None:
            full = self._decode([self.anchor, token_id])
            text = full[len(self.anchor_text):] if full.startswith(self.anchor_text) else self.text(token_id)
            self._pieces[token_id] = text
        return text

    def bytes(self, token_id: int) -> list[int]:
        match = _BYTE_PIECE.match(self.tokenizer.convert_ids_to_tokens(token_id) or "")
        return [int(match.group(1), 16)] if match else list(self.piece(token_id).encode("utf-8"))


class IncrementalDetokenizer:
    """The text each generated token completes, by prefix/read offsets over the ids (TGI's algorithm).

    Fast tokenizers run it in Rust (`tokenizers.decoders.DecodeStream`, the same algorithm: ~2 us a token instead
    of two Python-level decodes, ~7 us); the offsets are mirrored here so that `flush` can release a held-back
    incomplete character, and a tokenizer without a Rust backend (or a stream that refuses a step) takes the Python
    window decodes, which give the same text."""

    def __init__(self, tokenizer, prompt_ids: tuple[int, ...] | list[int] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prompt_ids[-PROMPT_CONTEXT:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream = None
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(ids=list(self.ids), skip_special_tokens=True)

    def add(self, token_id: int, special: bool = False) -> str:
        """Append one generated token; return the text it completes ("" while a character is incomplete)."""
        if special:  # EOS and friends: never part of the text (their literal text goes to token.text only)
            return ""
        self.ids.append(token_id)
        if self._stream is not None:
            try:
                text = self._stream.step(self._backend, token_id)
            except Exception:  # noqa: BLE001 - the Rust stream refused (a decoder that rewrites its prefix)
                self._stream = None
                return self._delta(final=False)
            if text is None:
                return ""
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text
        return self._delta(final=False)

    def flush(self) -> str:
        """Text still held back at the end of generation (an incomplete character decodes as U+FFFD)."""
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) <= len(prefix) or (full.endswith(REPLACEMENT) and not final):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return full[len(prefix):]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class StopMatcher:
    """Finds the first stop string in the growing text.

    keep mode (TGI): the stop text stays in the output, anything after it is dropped.
    cut mode (OpenAI): the stop text is removed, and a tail that could still become a stop is held back.
    """

    def __init__(self, stops: tuple[str, ...] | list[str], cut: bool = False):
        self.stops = tuple(s for s in stops if s)
        self.cut = cut
        self.text = ""
        self.emitted = 0  # characters of self.text already handed out
        self.matched: str | None = None
        self.match_start = -1

    def feed(self, delta: str) -> tuple[str, str | None]:
        """Add decoded text; return (text to show now, the stop string if one matched)."""
        if not self.stops:  # the common case: nothing to search or hold back
            self.text += delta
            self.emitted = len(self.text)
            return delta, None
        search_from = max(0, len(self.text) - max((len(s) for s in self.stops), default=0) + 1)
        self.text += delta
        hit = self._find(search_from)
        if hit is not None:
            self.match_start, self.matched = hit
            end = self.match_start if self.cut else self.match_start + len(self.matched)
            return self._emit_to(end), self.matched
        return self._emit_to(len(self.text) - (self._held_back() if self.cut else 0)), None

    def flush(self) -> str:
        """At the end without a match: release what cut mode held back."""
        return self._emit_to(len(self.text)) if self.matched is None else ""

    @property
    def output(self) -> str:
        """The final text: up to and including the stop (keep) or before it (cut)."""
        if self.matched is None:
            return self.text
        return self.text[: self.match_start + (0 if self.cut else len(self.matched))]

    @property
    def text_before_stop(self) -> str:
        return self.text if self.matched is None else self.text[: self.match_start]

    def _find(self, start: int) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self.stops:
            i = self.text.find(stop, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, stop)
        return best

    def _held_back(self) -> int:
        # Longest suffix of the text that is a proper prefix of some stop string.
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def _emit_to(self, end: int) -> str:
        end = max(end, self.emitted)
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
