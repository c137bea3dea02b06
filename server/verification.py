"""Verification of speculative drafts: which drafts a sequence keeps, and the target's own token after them.

A sequence with drafts d_0 .. d_{k-1} has k + 1 logits rows this step: row j is the model's next-token distribution
after its tokens + d_0 .. d_{j-1}. Each row goes through the sampler's whole logits pipeline as if those drafts had
already been appended (`DraftRow`: penalties count them, the watermark hashes the previous one, the grammar state is
a copy advanced over them), so row j's distribution is exactly what decoding without speculation would use there.

Acceptance, walking j = 0, 1, ...:
- greedy: keep d_j while it is row j's argmax; the first row whose argmax differs (or row k) gives the target token.
  Outputs are identical to decoding without speculation.
- sampling (rejection sampling against a deterministic draft): keep d_j with probability p_j(d_j); on the first
  rejection draw from p_j with d_j removed, renormalised; after k acceptances draw from p_k. Each emitted token is
  then distributed exactly as without speculation. Draws come from the request's own generator (k uniforms, then
  one exponential race over the vocabulary), so a seeded request repeats itself for the same batch.
Logprobs and top-n alternatives of every emitted token come from its row's processed distribution, as without
speculation.
"""
from __future__ import annotations

from typing import Any

import torch

from server.protocol import SamplingParams
from server.sequence import Sequence


class DraftRow:
    """What the logits pipeline reads of a sequence, at the row after `drafts` (a prefix of its drafts)."""

    __slots__ = ("params", "token_ids", "num_prompt_tokens", "grammar_state", "generator")

    def __init__(self, seq: Sequence, drafts: list[int], grammar_state: Any):
        self.params: SamplingParams = seq.params
        self.token_ids = seq.token_ids + drafts if drafts else seq.token_ids
        self.num_prompt_tokens = seq.num_prompt_tokens
        self.grammar_state = grammar_state
        self.generator = seq.generator

    @property
    def generated_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]


def draft_rows(seqs: list[Sequence], drafts: list[list[int]], eos_token_ids: tuple[int, ...]) -> list[DraftRow]:
    """One DraftRow per logits row: for each sequence, rows after 0, 1, ..., k of its k drafts."""
    rows = []
    for seq, ds in zip(seqs, drafts):
        state = seq.grammar_state
        stop_ids = seq.params.stop_token_ids or eos_token_ids
        for j in range(len(ds) + 1):
            rows.append(DraftRow(seq, ds[:j], state))
            if j < len(ds) and state is not None:
                state = _advanced(state, ds[j], ds[j] in stop_ids)
    return rows


def _advanced(state, token: int, is_stop: bool):
    """A copy of state after token, by Sequence.append's rule (EOS in a final state takes no automaton step)."""
    state = state.copy()
    if not (is_stop and state.can_end()):
        state.advance(token)  # drafts were cut at the first token the grammar forbids: this cannot fail
    return state


def accept(logits: torch.Tensor, seqs: list[Sequence], drafts: list[list[int]]) -> list[tuple[list[int], list[int]]]:
    """Processed logits (R, vocab) of the draft rows -> per sequence (emitted ids, their rows)."""
    greedy_choice = logits.argmax(dim=-1).tolist()  # one host sync for every greedy row
    starts, row0 = [], 0
    for ds in drafts:
        starts.append(row0)
        row0 += len(ds) + 1
    sampled = [i for i, s in enumerate(seqs) if s.params.is_sampling]
    drawn = _accept_sampled(logits, [seqs[i] for i in sampled], [drafts[i] for i in sampled],
                            [starts[i] for i in sampled]) if sampled else []
    by_seq = dict(zip(sampled, drawn))
    out = []
    for i, ds in enumerate(drafts):
        tokens = by_seq.get(i)
        if tokens is None:  # greedy: the longest prefix of drafts that are argmaxes, then the next argmax
            tokens = []
            for j in range(len(ds) + 1):
                tokens.append(greedy_choice[starts[i] + j])
                if j == len(ds) or tokens[-1] != ds[j]:
                    break
        out.append((tokens, list(range(starts[i], starts[i] + len(tokens)))))
    return out


def _accept_sampled(logits: torch.Tensor, seqs: list[Sequence], drafts: list[list[int]], starts: list[int]
                    ) -> list[list[int]]:
    """Rejection sampling for S sampling sequences, batched: logits (R, vocab) warped; each sequence's rows start at
    starts[i]. Per sequence: k uniforms, then one exponential race, from its own generator (that order, always)."""
    device = logits.device
    draft_rows = [st + j for st, ds in zip(starts, drafts) for j in range(len(ds))]
    draft_ids = [t for ds in drafts for t in ds]
    probs = torch.softmax(logits, dim=-1)  # (R, vocab); rows of greedy sequences are not read
    p_draft = probs[torch.tensor(draft_rows, dtype=torch.long, device=device),
                    torch.tensor(draft_ids, dtype=torch.long, device=device)] if draft_rows else None
    u = [torch.rand(len(ds), generator=s.generator, device=device) for s, ds in zip(seqs, drafts) if ds]
    kept_flags = (torch.cat(u) < p_draft).tolist() if u else []  # accept d_j with probability p_j(d_j)
    kept, final_rows, offset = [], [], 0
    for st, ds in zip(starts, drafts):
        n = 0
        while n < len(ds) and kept_flags[offset + n]:
            n += 1
        offset += len(ds)
        kept.append(n)
        final_rows.append(st + n)
    final = probs[torch.tensor(final_rows, dtype=torch.long, device=device)]  # (S, vocab), a copy
    rejected = [(i, ds[n]) for i, (ds, n) in enumerate(zip(drafts, kept)) if n < len(ds)]
    if rejected:  # the residual distribution: p without the rejected draft (renormalised by the race below)
        rows, ids = zip(*rejected)
        final[list(rows), list(ids)] = 0.0
    # Exponential race: argmax(p / q), q ~ Exp(1), is a draw from p / sum(p); the same draw Sampler._choose makes.
    q = torch.empty_like(final)
    for i, s in enumerate(seqs):
        q[i].exponential_(generator=s.generator)
    chosen = (final / q).argmax(dim=-1).tolist()
    return [ds[:n] + [t] for ds, n, t in zip(drafts, kept, chosen)]
