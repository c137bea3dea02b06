"""Helpers for engine tests: prompts of chosen lengths and a transformers reference."""
from __future__ import annotations

import random

import torch

from server.protocol import EngineRequest, SamplingParams


def make_prompts(tokenizer, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Token-id prompts of exactly the given lengths (BOS first), cut from real tokenized text."""
    from tests.tiny_checkpoint import _training_text

    ids = tokenizer(_training_text(seed)[:20000], add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    prompts = []
    for n in lengths:
        start = rng.randrange(0, len(ids) - n)
        prompts.append([tokenizer.bos_token_id] + ids[start:start + n - 1])
    return prompts


def greedy_requests(prompts: list[list[int]], max_new: list[int] | int, **params) -> list[EngineRequest]:
    if isinstance(max_new, int):
        max_new = [max_new] * len(prompts)
    return [EngineRequest(f"r{i}", tuple(p), SamplingParams(max_new_tokens=m, ignore_eos=True, **params))
            for i, (p, m) in enumerate(zip(prompts, max_new))]


def tokens_of(events) -> list[int]:
    return [e.token_id for e in events if e.error is None]


@torch.inference_mode()
def assert_greedy_parity(hf_model, prompt: list[int], generated: list[int], tol: float = 1e-4) -> None:
    """Teacher forcing: every generated token must be an argmax (within tol) of the reference's logits."""
    full = torch.tensor([prompt + generated])
    logits = hf_model(full).logits[0, len(prompt) - 1:-1].float()  # (num_generated, vocab)
    chosen = logits.gather(1, torch.tensor(generated)[:, None]).squeeze(1)
    gap = logits.max(dim=-1).values - chosen
    bad = (gap > tol).nonzero().flatten().tolist()
    assert not bad, f"tokens at {bad} are not argmax of the reference (gaps {gap[bad].tolist()})"
