"""Kirchenbauer et al. (2023) watermark: a green list per previous token, biased by +delta during generation,
and the detector that counts green tokens in a text's token ids (z-test against the fraction gamma).

Same constants as TGI (hash key 15485863, green list = first int(vocab * gamma) ids of a permutation seeded by
hash_key * previous token), so the two are interchangeable for detection.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from server.protocol import WatermarkDetection

HASH_KEY = 15485863


@lru_cache(maxsize=8192)
def green_list(prev_token: int, vocab_size: int, gamma: float) -> torch.Tensor:
    """Token ids (int64, CPU) favoured after prev_token. Cached: the same previous token recurs constantly."""
    generator = torch.Generator().manual_seed(HASH_KEY * prev_token)
    return torch.randperm(vocab_size, generator=generator)[: int(vocab_size * gamma)]


def apply_watermark(logits: torch.Tensor, prev_tokens: list[int], gamma: float, delta: float) -> None:
    """logits (R, vocab), in place: +delta on each row's green list (row r follows prev_tokens[r])."""
    vocab_size = logits.shape[-1]
    for row, prev in enumerate(prev_tokens):
        logits[row, green_list(prev, vocab_size, gamma).to(logits.device)] += delta


def detect(token_ids: list[int], vocab_size: int, gamma: float, delta: float) -> WatermarkDetection:
    """One-proportion z-test: are more tokens green (given their predecessor) than chance (gamma) allows?
    delta (the bias generation adds) is only reported."""
    scored = len(token_ids) - 1
    if scored < 1:
        return WatermarkDetection(0.0, 1.0, 0.0, 0, gamma, delta)
    green = 0
    for prev, token in zip(token_ids, token_ids[1:]):
        members = _green_set(prev, vocab_size, gamma)
        green += token in members
    z = (green - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))
    p_value = 0.5 * math.erfc(z / math.sqrt(2))  # one-sided upper tail of the standard normal
    return WatermarkDetection(z, p_value, green / scored, scored, gamma, delta)


@lru_cache(maxsize=8192)
def _green_set(prev_token: int, vocab_size: int, gamma: float) -> frozenset[int]:
    return frozenset(green_list(prev_token, vocab_size, gamma).tolist())
