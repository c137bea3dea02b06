"""The batched grammar mask: logits outside each constrained row's allowed tokens become -inf, in place."""
from __future__ import annotations

import torch

from grammars.state import GrammarState


def apply_grammar_masks(logits: torch.Tensor, states: list[GrammarState | None]) -> None:
    """logits (num_rows, vocab), one state per row (None: unconstrained, left untouched).

    Stacks the rows' cached masks (an all-True row for unconstrained ones) and applies one masked_fill_.
    """
    assert logits.shape[0] == len(states), (logits.shape, len(states))
    if all(s is None for s in states):
        return
    device = logits.device
    free = None
    rows = []
    for s in states:
        if s is None:
            if free is None:
                free = torch.ones(logits.shape[1], dtype=torch.bool, device=device)
            rows.append(free)
        else:
            rows.append(s.allowed_mask(device))
    allowed = torch.stack(rows)  # (num_rows, vocab) bool
    assert allowed.shape == logits.shape, f"grammar vocab {allowed.shape[1]} != logits width {logits.shape[1]}"
    logits.masked_fill_(~allowed, float("-inf"))
