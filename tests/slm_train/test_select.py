"""SLM selection math (select.py): top-k by excess loss, ties, validity, eq. 4, the random ablation."""
from __future__ import annotations

import math

import torch

from slm_train.select import excess_loss, num_selected, random_scores, selected_mean, top_k_mask


def test_top_k_picks_exactly_the_highest_valid_scores():
    scores = torch.tensor([[0.1, 5.0, 3.0, -1.0], [4.0, 2.0, 9.0, 0.0]])
    valid = torch.tensor([[False, True, True, True], [True, True, False, True]])  # 9.0 is invalid
    mask = top_k_mask(scores, valid, 0.5)  # 6 valid -> k = 3: 5.0, 4.0, 3.0
    assert mask.tolist() == [[False, True, True, False], [True, False, False, False]]


def test_k_is_ceil_of_ratio_times_valid_and_ratio_one_keeps_all():
    assert num_selected(10, 0.6) == 6 and num_selected(7, 0.6) == math.ceil(4.2) == 5 and num_selected(3, 1.0) == 3
    scores = torch.randn(4, 9)
    valid = torch.rand(4, 9) > 0.3
    assert torch.equal(top_k_mask(scores, valid, 1.0), valid)
    for ratio in (0.1, 0.4, 0.6, 0.8):
        mask = top_k_mask(scores, valid, ratio)
        assert int(mask.sum()) == num_selected(int(valid.sum()), ratio)
        assert not (mask & ~valid).any()
        # every selected score is >= every unselected valid score
        assert scores[mask].min() >= scores[valid & ~mask].max()


def test_ties_at_the_threshold_still_select_exactly_k():
    scores = torch.zeros(3, 5)
    mask = top_k_mask(scores, torch.ones(3, 5, dtype=torch.bool), 0.4)
    assert int(mask.sum()) == 6


def test_excess_loss_ranks_tokens_the_reference_finds_easy_but_the_model_does_not():
    loss = torch.tensor([[2.0, 2.0, 8.0, 8.0]], requires_grad=True)
    ref = torch.tensor([[0.1, 1.9, 7.9, 1.0]])  # learnable (0), already known (1), noise (2), learnable (3)
    excess = excess_loss(loss, ref)
    assert not excess.requires_grad
    mask = top_k_mask(excess, torch.ones(1, 4, dtype=torch.bool), 0.5)
    assert mask.tolist() == [[True, False, False, True]]


def test_selected_mean_is_eq4_and_carries_gradient_only_through_selected_tokens():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    mask = torch.tensor([True, False, True, False])
    out = selected_mean(loss, mask)
    assert math.isclose(out.detach().item(), (1.0 + 3.0) / 2)
    out.backward()
    assert loss.grad.tolist() == [0.5, 0.0, 0.5, 0.0]


def test_random_scores_are_reproducible_per_step_and_differ_between_steps():
    a, b, c = random_scores((4, 8), 1, 7), random_scores((4, 8), 1, 7), random_scores((4, 8), 1, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the random ablation selects about ratio of the tokens, uniformly over positions
    hits = sum(top_k_mask(random_scores((8, 32), 0, s), torch.ones(8, 32, dtype=torch.bool), 0.6).float()
               for s in range(200)) / 200
    assert abs(float(hits.mean()) - 0.6) < 0.01 and float(hits.min()) > 0.45
