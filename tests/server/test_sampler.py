"""The logits pipeline against transformers' logits processors, and the OpenAI penalty definitions."""
import torch
from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper, TypicalLogitsWarper)

from server.protocol import EngineRequest, SamplingParams
from server.sampler import Sampler
from server.sequence import Sequence


def seq(tokens, n_prompt=None, **params) -> Sequence:
    s = Sequence(EngineRequest("x", tuple(tokens[:n_prompt] if n_prompt else tokens), SamplingParams(**params)), 0)
    s.token_ids = list(tokens)
    return s


def test_warpers_match_transformers():
    torch.manual_seed(0)
    logits = torch.randn(1, 300) * 3
    ids = torch.tensor([[1, 2, 3]])
    for params, ref in [
        (dict(temperature=0.7), TemperatureLogitsWarper(0.7)),
        (dict(top_k=17, do_sample=True), TopKLogitsWarper(17)),
        (dict(top_p=0.8, do_sample=True), TopPLogitsWarper(0.8)),
        (dict(typical_p=0.6, do_sample=True), TypicalLogitsWarper(0.6)),
        (dict(repetition_penalty=1.3), RepetitionPenaltyLogitsProcessor(1.3)),
    ]:
        ours = Sampler("cpu").process(logits.clone(), [seq([1, 2, 3], **params)])
        expected = ref(ids, logits.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(expected)), params
        finite = ~torch.isinf(ours)
        assert torch.allclose(ours[finite], expected[finite], atol=1e-5), params


def test_frequency_and_presence_follow_openai_over_generated_tokens():
    logits = torch.zeros(1, 10)
    s = seq([7, 3, 3, 3, 5], n_prompt=2, frequency_penalty=0.5, presence_penalty=0.25)  # generated: 3, 3, 5
    out = Sampler("cpu").process(logits, [s])
    assert out[0, 3] == -(0.5 * 2 + 0.25) and out[0, 5] == -(0.5 + 0.25) and out[0, 7] == 0


def test_logit_bias_and_greedy_choice():
    s = seq([1], logit_bias=((4, 100.0),))
    out = Sampler("cpu")(torch.zeros(1, 10), [s])
    assert out[0].token_id == 4 and abs(out[0].logprob) < 1e-6


def test_top_n_tokens_are_sorted_logprobs():
    s = seq([1], top_n_tokens=3)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    out = Sampler("cpu")(logits, [s])
    ids = [t for t, _ in out[0].top_tokens]
    lps = [lp for _, lp in out[0].top_tokens]
    assert ids == [1, 3, 2] and lps == sorted(lps, reverse=True)
    assert abs(lps[0] - torch.log_softmax(logits, -1)[0, 1].item()) < 1e-6


def test_seeded_sampling_follows_the_distribution_and_the_seed():
    sampler = Sampler("cpu")
    probs = torch.tensor([0.1, 0.6, 0.3])
    counts = torch.zeros(3)
    s = seq([1], do_sample=True, seed=5)
    sampler.init_sequence(s)
    for _ in range(3000):
        counts[sampler(probs.log()[None].clone(), [s])[0].token_id] += 1
    assert torch.allclose(counts / 3000, probs, atol=0.03)
    a, b, c = (seq([1], do_sample=True, seed=x) for x in (9, 9, 10))
    for x in (a, b, c):
        sampler.init_sequence(x)
    flat = torch.zeros(1, 1000)
    draws = [[sampler(flat.clone(), [x])[0].token_id for _ in range(20)] for x in (a, b, c)]
    assert draws[0] == draws[1] != draws[2]


def test_watermark_biases_the_green_list():
    from server.watermark import green_list

    s = seq([42], watermark=True)
    out = Sampler("cpu", watermark_gamma=0.25, watermark_delta=2.0).process(torch.zeros(1, 100), [s])
    green = green_list(42, 100, 0.25)
    assert len(green) == 25 and torch.all(out[0, green] == 2.0) and out.sum() == 50.0


def test_argmax_logsumexp_op_matches_torch():
    """The C++ reduction (server/csrc/sampling_ops.cpp) against torch.argmax / torch.logsumexp: random rows, ties
    (the first maximum wins, as torch's), masked (-inf) tokens, a row of one token, rows with a stride, odd widths."""
    import pytest

    from server import cpu_attention
    from server.sampler import argmax_logsumexp

    if not cpu_attention.available():
        pytest.skip("the C++ extension cannot be built here (no compiler): the sampler uses torch")
    gen = torch.Generator().manual_seed(0)
    cases = [torch.randn(32, 8000, generator=gen) * 4, torch.randn(3, 1, generator=gen),
             torch.randn(5, 1031, generator=gen), torch.randn(7, 40, generator=gen)[:, 3:33]]
    tied = torch.randn(4, 1000, generator=gen)
    tied[:, [17, 500, 999]] = 50.0  # three equal maxima: the first is the argmax
    masked = torch.randn(4, 1000, generator=gen)
    masked[:, ::2] = float("-inf")  # a grammar mask / top-k leaves -inf behind
    masked[1, :999] = float("-inf")  # only the last token allowed
    for logits in cases + [tied, masked]:
        ids, lse = torch.ops.rho_serve.argmax_logsumexp(logits.contiguous())
        assert torch.equal(ids, logits.argmax(dim=-1))
        torch.testing.assert_close(lse, torch.logsumexp(logits, dim=-1), rtol=1e-6, atol=1e-5)
        ids2, lse2 = argmax_logsumexp(logits)  # the sampler's wrapper, strided rows included
        assert torch.equal(ids2, ids) and torch.equal(lse2, lse)


def test_greedy_logprob_is_log_softmax_at_the_choice():
    torch.manual_seed(1)
    logits = torch.randn(6, 500) * 3
    seqs = [seq([1, 2, 3]) for _ in range(6)]
    picked = Sampler("cpu")(logits.clone(), seqs)
    expected = torch.log_softmax(logits, dim=-1)
    for r, token in enumerate(picked):
        assert token.token_id == int(logits[r].argmax())
        assert abs(token.logprob - float(expected[r, token.token_id])) < 1e-5
