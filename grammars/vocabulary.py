"""A transformers tokenizer -> the byte string of every token, and the outlines-core `Vocabulary` built from it.

Handles the two tokenizer families served here: Llama-style SentencePiece (`▁` for spaces, `<0xNN>` byte-fallback
tokens) and GPT-2-style byte-level BPE (every byte mapped to a printable character). Special tokens are left out:
a grammar never produces them, and outlines-core wants the EOS id outside the map.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache

from outlines_core import Vocabulary

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    return "ByteLevel" in kinds


def _piece_bytes(piece: str, byte_level: bool) -> bytes:
    if byte_level:
        table = _byte_level_decoder()
        return bytes(table[c] for c in piece) if all(c in table for c in piece) else piece.encode()
    match = _BYTE_TOKEN.match(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace("▁", " ").encode()


def token_bytes(tokenizer, vocab_size: int) -> dict[int, bytes]:
    """id -> the bytes the token adds to the text, for every non-special token with an id below vocab_size."""
    special = set(tokenizer.all_special_ids)
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    byte_level = _is_byte_level(tokenizer)
    out: dict[int, bytes] = {}
    for piece, token_id in tokenizer.get_vocab().items():
        if token_id in special or token_id >= vocab_size:
            continue
        if token_id in added:
            if added[token_id].special:
                continue
            data = added[token_id].content.encode()  # added tokens are stored as plain text
        else:
            data = _piece_bytes(piece, byte_level)
        if data:
            out[token_id] = data
    return out


def build_vocabulary(tokens: dict[int, bytes], eos_token_id: int) -> Vocabulary:
    """The outlines-core vocabulary: bytes -> ids sharing them (several ids may spell the same bytes)."""
    by_bytes: dict[bytes, list[int]] = {}
    for token_id, data in tokens.items():
        if token_id != eos_token_id:
            by_bytes.setdefault(data, []).append(token_id)
    return Vocabulary(eos_token_id, by_bytes)
