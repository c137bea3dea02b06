"""Token selection for SLM (Rho-1 eq. 3-5) and its random ablation, as pure functions on loss tensors.

Ranking is over all valid tokens of the batch passed in (the paper: "ranking the tokens in a batch"). Under DDP,
train.py gathers every rank's excess losses first (rank_scope="global"), so the selection equals a 1-process run on
the global batch; with rank_scope="local" each rank ranks only its own rows. Exactly k = ceil(ratio * num_valid)
tokens are selected; ties at the threshold are broken by `torch.topk` (deterministic on CPU).
"""
from __future__ import annotations

import math

import torch


def num_selected(num_valid: int, ratio: float) -> int:
    return min(num_valid, math.ceil(ratio * num_valid))


def top_k_mask(scores: torch.Tensor, valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask (same shape as scores) of the top ceil(ratio * valid.sum()) valid entries by score."""
    flat = scores.float().masked_fill(~valid, float("-inf")).flatten()
    k = num_selected(int(valid.sum()), ratio)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.topk(k).indices] = True
    return mask.view_as(scores) & valid


def excess_loss(loss: torch.Tensor, ref_loss: torch.Tensor) -> torch.Tensor:
    """Eq. 3: L_theta - L_ref per token; no gradient flows through the ranking."""
    return loss.detach() - ref_loss


def random_scores(shape: tuple[int, ...], seed: int, step: int) -> torch.Tensor:
    """Scores whose top-k is a uniformly random k-subset; the same on every rank for a given (seed, step)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.rand(shape, generator=gen)


def selected_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 4: mean cross-entropy over the selected tokens (N * k% = number selected); nan when none."""
    return (loss * mask).sum() / mask.sum()
