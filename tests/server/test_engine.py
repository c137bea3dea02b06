"""The engine through its real path (loader, scheduler, paged attention, sampler) against transformers."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from server.config import ConfigError, EngineConfig
from server.protocol import EngineRequest, FinishReason, SamplingParams
from tests.server.engine_helpers import assert_greedy_parity, greedy_requests, make_prompts, tokens_of

LENGTHS = [1, 2, 3, 5, 8, 13, 16, 17, 31, 32, 33, 47, 64, 65, 90, 127, 128, 150, 200, 255, 256, 299, 300, 40]


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine(max_batch_prefill_tokens=512)


@pytest.fixture(scope="module")
def hf_model(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompts(engine):
    return make_prompts(engine.checkpoint.tokenizer, LENGTHS)


def test_prefill_logits_match_transformers(engine, hf_model, prompts):
    for prompt in prompts[::3]:
        ours = engine.prompt_logits(prompt)
        with torch.inference_mode():
            ref = hf_model(torch.tensor([prompt])).logits[0].float()
        assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_greedy_alone_matches_transformers(engine, hf_model, prompts):
    for i, prompt in enumerate(prompts):
        out = engine.generate(greedy_requests([prompt], 12))["r0"]
        assert len(out) == 12 and out[-1].finish_reason == FinishReason.LENGTH
        assert_greedy_parity(hf_model, prompt, tokens_of(out))


def test_greedy_batched_with_mixed_lengths_matches_alone(engine, hf_model, prompts):
    max_new = [4 + (7 * i) % 29 for i in range(len(prompts))]
    together = engine.generate(greedy_requests(prompts, max_new))
    for i, prompt in enumerate(prompts):
        got = tokens_of(together[f"r{i}"])
        assert len(got) == max_new[i]
        assert_greedy_parity(hf_model, prompt, got)
    assert engine.block_manager.num_used_blocks == 0


def test_mistral_sliding_window_matches_transformers(make_engine, tiny_mistral_dir):
    engine = make_engine(model_id=str(tiny_mistral_dir))
    hf = AutoModelForCausalLM.from_pretrained(tiny_mistral_dir, dtype=torch.float32).eval()
    for prompt in make_prompts(engine.checkpoint.tokenizer, [20, 33, 100], seed=3):
        ours = engine.prompt_logits(prompt)
        with torch.inference_mode():
            ref = hf(torch.tensor([prompt])).logits[0].float()
        assert torch.allclose(ours, ref, atol=1e-4, rtol=0)
        out = tokens_of(engine.generate(greedy_requests([prompt], 40))["r0"])  # decode crosses the window
        assert_greedy_parity(hf, prompt, out)


def test_small_pool_preempts_and_recomputes(make_engine, engine, prompts):
    reqs = greedy_requests([prompts[i % len(prompts)][:60] for i in range(32)], [20 + i % 13 for i in range(32)])
    ample = engine.generate(reqs)
    small = make_engine(max_batch_total_tokens=320, block_size=16, max_batch_prefill_tokens=128)
    preemptions = []
    original = small.scheduler.preempt
    small.scheduler.preempt = lambda seq: (preemptions.append(seq.request_id), original(seq))
    tight = small.generate(reqs)
    assert preemptions, "the pool was meant to be too small for 32 sequences"
    for r in reqs:
        assert tokens_of(tight[r.request_id]) == tokens_of(ample[r.request_id])
    assert small.block_manager.num_used_blocks == 0
    assert not small.scheduler.has_work() and not small.scheduler.sequences


def test_prefix_cache_reuses_blocks_and_keeps_outputs(make_engine, engine):
    tok = engine.checkpoint.tokenizer
    shared = make_prompts(tok, [200], seed=7)[0]
    first, second = shared + [400, 401, 402], shared + [500, 501]
    cached = make_engine()
    uncached = make_engine(enable_prefix_caching=False)
    cached.generate(greedy_requests([first], 5))
    warm = cached.generate(greedy_requests([second], 16))["r0"]
    cold = uncached.generate(greedy_requests([second], 16))["r0"]
    assert warm[0].num_cached_prompt_tokens == 192  # 12 full blocks of the 200-token prefix
    assert cold[0].num_cached_prompt_tokens == 0
    assert tokens_of(warm) == tokens_of(cold)
    assert cached.stats().num_prefill_tokens_total == len(first) + len(second) - 192


def test_seeded_sampling_is_batch_independent(engine, prompts):
    params = SamplingParams(max_new_tokens=24, do_sample=True, seed=1234, temperature=0.9, top_k=50, top_p=0.95)
    target = EngineRequest("target", tuple(prompts[10]), params)
    alone = tokens_of(engine.generate([target])["target"])
    others = [EngineRequest(f"o{i}", tuple(prompts[i % len(prompts)]),
                            SamplingParams(max_new_tokens=5 + i, do_sample=i % 2 == 0, seed=i, top_n_tokens=i % 3))
              for i in range(31)]
    batched = engine.generate(others[:15] + [target] + others[15:])
    assert tokens_of(batched["target"]) == alone
    other_seed = tokens_of(engine.generate([EngineRequest("x", target.prompt_token_ids,
                                                          SamplingParams(**{**params.__dict__, "seed": 99}))])["x"])
    assert other_seed != alone


def test_abort_frees_blocks(engine, prompts):
    engine.submit(EngineRequest("long", tuple(prompts[20]), SamplingParams(max_new_tokens=500, ignore_eos=True)))
    for _ in range(3):
        engine.step()
    assert engine.block_manager.num_used_blocks > 0
    engine.abort("long")
    assert engine.step() == []
    assert engine.block_manager.num_used_blocks == 0 and not engine.scheduler.sequences


def test_a_failing_request_fails_alone(engine, prompts):
    # A logit bias on a token id beyond the vocabulary (the router refuses it; the engine must survive it anyway).
    bad = EngineRequest("bad", tuple(prompts[5]), SamplingParams(max_new_tokens=8, logit_bias=((10**6, 1.0),)))
    good = greedy_requests(prompts[6:9], 8)
    out = engine.generate([bad] + good)
    assert out["bad"][-1].error and "IndexError" in out["bad"][-1].error
    for r in good:
        assert len(tokens_of(out[r.request_id])) == 8
    assert engine.block_manager.num_used_blocks == 0


def test_prompt_logprobs_match_transformers(engine, hf_model, prompts):
    prompt = prompts[18]
    req = EngineRequest("p", tuple(prompt), SamplingParams(max_new_tokens=2, prompt_logprobs=True))
    first = engine.generate([req])["p"][0]
    with torch.inference_mode():
        ref = torch.log_softmax(hf_model(torch.tensor([prompt])).logits[0].float(), -1)
    expected = ref[:-1].gather(1, torch.tensor(prompt[1:])[:, None]).squeeze(1)
    assert first.prompt_logprobs[0] is None and len(first.prompt_logprobs) == len(prompt)
    assert torch.allclose(torch.tensor(first.prompt_logprobs[1:]), expected, atol=1e-4)


def test_oversized_request_is_refused_with_a_clear_error(make_engine):
    small = make_engine(max_batch_total_tokens=64, max_total_tokens=4096)
    out = small.generate([EngineRequest("big", tuple(range(3, 100)), SamplingParams(max_new_tokens=5))])
    assert "KV cache" in out["big"][-1].error and not small.scheduler.sequences


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_mistral_dir"])
def test_triton_attention_serves_what_transformers_computes(make_engine, request, fixture):
    """--attention triton (under TRITON_INTERPRET=1 on CPU): prefill logits and batched greedy decoding."""
    path = request.getfixturevalue(fixture)
    engine = make_engine(model_id=str(path), attention="triton", max_batch_prefill_tokens=64)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = make_prompts(engine.checkpoint.tokenizer, [5, 40, 70], seed=11)
    with torch.inference_mode():
        ref = hf(torch.tensor([prompts[1]])).logits[0].float()
    assert torch.allclose(engine.prompt_logits(prompts[1]), ref, atol=1e-4, rtol=0)
    out = engine.generate(greedy_requests(prompts, [6, 9, 12]))  # chunked prefill (budget 64) mixed with decodes
    for i, prompt in enumerate(prompts):
        assert_greedy_parity(hf, prompt, tokens_of(out[f"r{i}"]))


@pytest.mark.parametrize("attention", ["cpp", "torch"])
def test_a_bfloat16_kv_cache_on_cpu_stays_close_to_float32(make_engine, attention):
    """--kv-cache-dtype bfloat16: the cache holds bf16 (half the bytes); the model still computes in float32, so the
    prompt's logits move only by the rounding of the cached keys and values, and long prompts (chunks that take the
    torch path) and decode rows (the operator) both read it."""
    prompt = [1] + [(7 * i) % 200 + 3 for i in range(90)]
    full = make_engine(attention=attention)
    half = make_engine(attention=attention, kv_cache_dtype="bfloat16")
    assert {c.dtype for pair in half.runner.kv_caches for c in pair} == {torch.bfloat16}
    want, got = full.prompt_logits(prompt), half.prompt_logits(prompt)
    assert got.dtype == torch.float32
    err = (got - want).abs().max().item()
    assert 0 < err < 0.05 * want.abs().max().item(), err  # rounded (not bit-equal), yet close
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.9
    out = half.generate([EngineRequest("r", tuple(prompt), SamplingParams(max_new_tokens=12, ignore_eos=True))])["r"]
    assert len([e for e in out if e.error is None]) == 12


def test_kv_cache_dtype_is_checked(make_engine):
    with pytest.raises(ConfigError, match="kv_cache_dtype"):
        EngineConfig(model_id="m", kv_cache_dtype="float8")
