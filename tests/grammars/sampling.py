"""Batched constrained sampling with a real (random-weight) transformers model, for the grammar tests and bench.

One forward pass of all rows per step (KV cache), each row under its own grammar, the mask from
`grammars.mask`, seeded multinomial sampling at temperature 1, and the engine's EOS rule: EOS sampled where the
grammar may end finishes the row without advancing; any other token must be accepted by the automaton
(`advance` raises otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grammars.compiled import CompiledGrammar
from grammars.mask import GrammarMasks


@dataclass
class Generation:
    token_ids: list[int]
    ended_by_eos: bool


@torch.inference_mode()
def sample_constrained(model, prompt_ids: list[int], grammars: list[CompiledGrammar], max_new_tokens: int,
                       seed: int = 0) -> list[Generation]:
    """One generation per entry of `grammars` (repeat a grammar for several samples)."""
    generator = torch.Generator().manual_seed(seed)
    masks = GrammarMasks()  # as the engine's sampler keeps it: one per device
    states = [g.new_state() for g in grammars]
    outputs = [Generation([], False) for _ in grammars]
    done = [False] * len(grammars)
    input_ids = torch.tensor([prompt_ids] * len(grammars))  # (rows, prompt_len)
    cache = None
    for _ in range(max_new_tokens):
        out = model(input_ids=input_ids, cache=cache, use_cache=True)
        cache = out.past_key_values  # transformers 5 still returns it under this name
        logits = out.logits[:, -1].float()  # (rows, vocab)
        masks.apply(logits, [None if d else s for d, s in zip(done, states)])
        chosen = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)  # (rows, 1)
        for r, token in enumerate(chosen[:, 0].tolist()):
            if done[r]:
                continue
            if token in grammars[r].eos_token_ids and states[r].can_end():
                outputs[r].ended_by_eos = done[r] = True
                continue
            states[r].advance(token)
            outputs[r].token_ids.append(token)
        if all(done):
            break
        input_ids = chosen
    return outputs


def decode_bytes(tokens: dict[int, bytes], token_ids: list[int]) -> bytes:
    return b"".join(tokens[t] for t in token_ids)
