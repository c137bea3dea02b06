"""`--speculate N`: n-gram drafts verified in the decode pass, through the engine's real path.

Greedy outputs must equal decoding without speculation token for token (and pass transformers' teacher forcing);
sampled outputs must keep the target distribution (a chi-square test that a wrong correction step fails); grammars,
stops, lengths, logprobs and block accounting must be what they are without speculation.
"""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from server.config import EngineConfig
from server.engine import Engine
from server.protocol import EngineRequest, FinishReason, SamplingParams
from server.sequence import Sequence
from server.speculation import DraftState, Speculator
from server.verification import accept
from tests.server.engine_helpers import assert_greedy_parity, greedy_requests, make_prompts, tokens_of


def repetitive_prompts(tokenizer, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Prompts that repeat a phrase (as worked solutions repeat the question's numbers): drafts get proposed."""
    out = []
    for i, base in enumerate(make_prompts(tokenizer, [max(6, n // 3) for n in lengths], seed=seed)):
        body = base[1:]
        out.append([tokenizer.bos_token_id] + (body * 4)[:lengths[i] - 1])
    return out


def make_engine(path, speculate: int, **kw) -> Engine:
    return Engine(EngineConfig(model_id=str(path), speculate=speculate, **kw))


@pytest.fixture(scope="module")
def plain(tiny_llama_dir):
    return make_engine(tiny_llama_dir, 0, max_batch_prefill_tokens=512)


@pytest.fixture(scope="module")
def spec(tiny_llama_dir):
    return make_engine(tiny_llama_dir, 5, max_batch_prefill_tokens=512)


@pytest.fixture(scope="module")
def prompts(plain):
    tok = plain.checkpoint.tokenizer
    return repetitive_prompts(tok, [7, 20, 33, 64, 100, 150]) + make_prompts(tok, [5, 40, 90], seed=4)


def test_drafts_follow_the_latest_earlier_ngram():
    state = DraftState()
    tokens = [1, 5, 6, 7, 8, 9, 2, 5, 6, 7, 3, 4, 5, 6, 7]
    assert state.propose(tokens, 3) == [3, 4, 5]  # (5, 6, 7) last seen at 7..9, followed by 3, 4, 5
    assert state.propose(tokens + [3, 4], 2) == [5, 6]  # incremental index: (7, 3, 4) was followed by 5, 6
    assert DraftState().propose([1, 2, 3], 4) == []  # no earlier occurrence of any suffix


def test_greedy_alone_identical_with_and_without_speculation(plain, spec, prompts, tiny_llama_dir):
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    for prompt in prompts:
        want = tokens_of(plain.generate(greedy_requests([prompt], 40))["r0"])
        got = tokens_of(spec.generate(greedy_requests([prompt], 40))["r0"])
        assert got == want
        assert_greedy_parity(hf, prompt, got)
    stats = spec.stats()
    assert stats.num_draft_tokens_accepted_total > 0, "the prompts were meant to get drafts accepted"
    assert stats.num_draft_tokens_proposed_total > stats.num_draft_tokens_accepted_total
    assert spec.block_manager.num_used_blocks == 0


def test_greedy_batched_identical_with_chunked_prefill(plain, spec, prompts):
    max_new = [5 + (11 * i) % 37 for i in range(len(prompts))]
    reqs = greedy_requests(prompts, max_new, top_n_tokens=2)
    want, got = plain.generate(reqs), spec.generate(reqs)
    for r in reqs:
        assert tokens_of(got[r.request_id]) == tokens_of(want[r.request_id])
        for a, b in zip(got[r.request_id], want[r.request_id]):  # logprobs and alternatives from the same rows
            assert math.isclose(a.logprob, b.logprob, abs_tol=1e-4)
            assert [t.token_id for t in a.top_tokens] == [t.token_id for t in b.top_tokens]
        assert got[r.request_id][-1].finish_reason == FinishReason.LENGTH
        assert len(got[r.request_id]) == r.params.max_new_tokens
    assert spec.block_manager.num_used_blocks == 0


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_mistral_dir"])
def test_greedy_identical_under_preemption(request, fixture):
    path = request.getfixturevalue(fixture)
    small = dict(max_batch_total_tokens=320, block_size=16, max_batch_prefill_tokens=64)
    base, fast = make_engine(path, 0, **small), make_engine(path, 4, **small)
    tok = base.checkpoint.tokenizer
    ps = repetitive_prompts(tok, [30 + 7 * i for i in range(12)], seed=2)
    reqs = greedy_requests(ps, [20 + i % 9 for i in range(12)])
    preemptions = []
    original = fast.scheduler.preempt
    fast.scheduler.preempt = lambda seq: (preemptions.append(seq.request_id), original(seq))
    want, got = base.generate(reqs), fast.generate(reqs)
    assert preemptions, "the pool was meant to be too small"
    for r in reqs:
        assert tokens_of(got[r.request_id]) == tokens_of(want[r.request_id])
    assert fast.block_manager.num_used_blocks == 0 and not fast.scheduler.sequences
