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
from server.speculation import MAX_SPECULATIVE_BATCH as MAX_BATCH
from server.speculation import DraftState, NgramHistory, Speculator
from tests.server.engine_helpers import assert_greedy_parity, greedy_requests, make_prompts, tokens_of


def repetitive_prompts(tokenizer, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Prompts that repeat a phrase (as worked solutions repeat the question's numbers): drafts get proposed."""
    out = []
    for i, base in enumerate(make_prompts(tokenizer, [max(6, n // 3) for n in lengths], seed=seed)):
        body = base[1:]
        out.append([tokenizer.bos_token_id] + (body * 4)[:lengths[i] - 1])
    return out


def spec_engine(path, speculate: int, **kw) -> Engine:
    return Engine(EngineConfig(model_id=str(path), speculate=speculate, **kw))


@pytest.fixture(scope="module")
def plain(tiny_llama_dir):
    return spec_engine(tiny_llama_dir, 0, max_batch_prefill_tokens=512)


@pytest.fixture(scope="module")
def spec(tiny_llama_dir):
    return spec_engine(tiny_llama_dir, 5, max_batch_prefill_tokens=512)


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


def test_history_of_finished_outputs_predicts_longest_first_and_stays_bounded():
    history = NgramHistory(max_entries=1000, max_follow=3)
    # prompt (1, 2, 3), output (10, 11, 12, 13, 14): the output's n-grams, and those that end on the prompt's last
    # ids, so the first output tokens are predicted after the same prompt ending.
    history.add([1, 2, 3, 10, 11, 12, 13, 14], num_prompt_tokens=3)
    assert history.match([7, 8, 2, 3], 5) == (2, [10, 11, 12])  # (2, 3) ends the prompt, then the output
    assert history.match([9, 11, 12], 5) == (2, [13, 14])
    assert history.match([10, 11, 12], 1) == (3, [13])  # the longest n first, cut to what is asked
    assert history.match([5, 1], 5) == (0, [])  # n-grams inside the prompt are not indexed
    history.add([1, 4, 11, 12, 99], num_prompt_tokens=2)
    assert history.match([11, 12], 5) == (2, [99])  # the latest occurrence wins
    small = NgramHistory(max_entries=6, max_follow=2)
    small.add([1] + list(range(100, 140)), num_prompt_tokens=1)
    assert len(small) == 6 and small.match([138], 2) == (0, [])  # only the newest n-grams are kept
    assert small.match([137, 138], 2) == (2, [139])


def test_greedy_sequences_draft_from_history_sampled_ones_only_from_themselves():
    spec = Speculator(4, max_total_tokens=100, eos_token_ids=(2,))
    done = Sequence(EngineRequest("a", (1, 20, 21), SamplingParams(max_new_tokens=8)), 0)
    done.token_ids += [30, 31, 32, 33, 34]
    spec.learn(done)
    greedy = Sequence(EngineRequest("b", (1, 40, 20, 21), SamplingParams(max_new_tokens=8)), 1)
    greedy.draft = DraftState(accept_rate=1.0)
    assert spec.drafts(greedy, 1) == [30, 31, 32, 33]  # nothing to copy from itself: the history's answer
    sampled = Sequence(EngineRequest("c", (1, 40, 20, 21), SamplingParams(max_new_tokens=8, do_sample=True,
                                                                           seed=3)), 2)
    sampled.draft = DraftState(accept_rate=1.0)
    assert spec.drafts(sampled, 1) == []  # its draws must not depend on other requests' outputs
    own = Sequence(EngineRequest("d", (1, 20, 21, 50, 51, 9, 20, 21), SamplingParams(max_new_tokens=8)), 3)
    own.draft = DraftState(accept_rate=1.0)
    assert spec.drafts(own, 1) == [50, 51, 9, 20]  # equal n-gram length: the sequence's own text wins
    off = Speculator(4, max_total_tokens=100, eos_token_ids=(2,), history_ngrams=0)
    off.learn(done)
    greedy.draft = DraftState(accept_rate=1.0)
    assert off.drafts(greedy, 1) == []


def test_history_drafts_are_accepted_and_change_nothing(plain, tiny_llama_dir):
    """A prompt asked again (as a server gets the same question twice): the second time its whole answer is in the
    history, so nearly every draft is accepted; both outputs are token for token plain decoding's."""
    spec = spec_engine(tiny_llama_dir, 5, max_batch_prefill_tokens=512)
    prompt = make_prompts(plain.checkpoint.tokenizer, [30], seed=9)[0]
    want = tokens_of(plain.generate(greedy_requests([prompt], 24))["r0"])
    accepted = []
    for _ in range(2):
        before = spec.stats().num_draft_tokens_accepted_total
        assert tokens_of(spec.generate(greedy_requests([prompt], 24))["r0"]) == want
        accepted.append(spec.stats().num_draft_tokens_accepted_total - before)
    assert accepted[1] >= 18 and accepted[1] > accepted[0], accepted  # 23 drafts could be kept at most
    assert spec.block_manager.num_used_blocks == 0


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
    base, fast = spec_engine(path, 0, **small), spec_engine(path, 4, **small)
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


def test_greedy_identical_with_penalties_bias_watermark_and_top_n(plain, spec, prompts):
    params = dict(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3, watermark=True,
                  logit_bias=((prompts[0][3], 2.0), (prompts[0][4], -1.0)), top_n_tokens=3)
    reqs = greedy_requests(prompts[:6], 30, **params)
    want, got = plain.generate(reqs), spec.generate(reqs)
    for r in reqs:
        assert [(e.token_id, round(e.logprob, 4)) for e in got[r.request_id]] == \
            [(e.token_id, round(e.logprob, 4)) for e in want[r.request_id]]


def test_stop_token_inside_drafts_ends_exactly_where_plain_decoding_does(plain, spec, prompts):
    stats = spec.stats()
    for prompt in prompts[:6]:
        full = tokens_of(plain.generate(greedy_requests([prompt], 40))["r0"])
        stop = full[min(15, len(full) - 1)]  # a token the model writes (often from a draft): make it the EOS
        params = dict(stop_token_ids=(stop,))
        reqs = [EngineRequest("r0", tuple(prompt), SamplingParams(max_new_tokens=40, **params))]
        want, got = plain.generate(reqs)["r0"], spec.generate(reqs)["r0"]
        assert tokens_of(got) == tokens_of(want) and got[-1].token_id == stop
        assert got[-1].finish_reason == want[-1].finish_reason == FinishReason.EOS_TOKEN and got[-1].is_special
    assert spec.stats().num_draft_tokens_accepted_total > stats.num_draft_tokens_accepted_total
    assert spec.block_manager.num_used_blocks == 0


def test_seeded_sampling_with_speculation_is_reproducible(spec, prompts):
    params = SamplingParams(max_new_tokens=30, do_sample=True, seed=7, temperature=0.7, top_k=20)
    reqs = [EngineRequest(f"s{i}", tuple(p), params) for i, p in enumerate(prompts[:5])]
    first, second = spec.generate(reqs), spec.generate(reqs)
    assert {k: tokens_of(v) for k, v in first.items()} == {k: tokens_of(v) for k, v in second.items()}
    assert all(len(tokens_of(v)) == 30 for v in first.values())


def test_abort_after_verification_steps_frees_every_block(spec, prompts):
    before = spec.stats().num_draft_tokens_proposed_total
    for i, p in enumerate(prompts[:4]):
        spec.submit(EngineRequest(f"a{i}", tuple(p), SamplingParams(max_new_tokens=400, ignore_eos=True)))
    for _ in range(60):
        spec.step()
        if spec.stats().num_draft_tokens_proposed_total > before + 8:
            break
    assert spec.stats().num_draft_tokens_proposed_total > before, "no drafts were verified before the abort"
    assert any(len(s.block_table) for s in spec.scheduler.sequences.values())
    for i in range(4):
        spec.abort(f"a{i}")
    spec.step()
    assert spec.block_manager.num_used_blocks == 0 and not spec.scheduler.sequences


def test_a_failing_step_with_drafts_fails_only_its_culprit(spec, prompts):
    bad = EngineRequest("bad", tuple(prompts[2]), SamplingParams(max_new_tokens=20, logit_bias=((10**6, 1.0),)))
    good = greedy_requests(prompts[3:6], 20)
    out = spec.generate([bad] + good)
    assert "IndexError" in out["bad"][-1].error
    for r in good:
        assert len(tokens_of(out[r.request_id])) == 20
    assert spec.block_manager.num_used_blocks == 0


def test_grammar_constrained_output_validates_and_matches_plain(tiny_llama_dir, plain, spec):
    import re

    from grammars.compiler import GrammarCompiler

    ckpt = plain.checkpoint
    compiler = GrammarCompiler(ckpt.tokenizer, ckpt.vocab_size, ckpt.eos_token_ids)
    pattern = r"(12\+34=46\. ){2,6}(ok|no)"
    grammar = compiler.compile(compiler.parse({"type": "regex", "value": pattern}))
    prompt = tuple(ckpt.tokenizer("12+34=46. 12+34=46. 12+34=46.")["input_ids"])
    before = spec.stats().num_draft_tokens_accepted_total
    for params in (SamplingParams(max_new_tokens=80, grammar=grammar),
                   SamplingParams(max_new_tokens=80, grammar=grammar, do_sample=True, seed=3)):
        want = plain.generate([EngineRequest("g", prompt, params)])["g"]
        got = spec.generate([EngineRequest("g", prompt, params)])["g"]
        text = ckpt.tokenizer.decode(tokens_of(got), skip_special_tokens=True)
        assert got[-1].finish_reason == FinishReason.EOS_TOKEN and re.fullmatch(pattern, text), text
        if not params.do_sample:
            assert tokens_of(got) == tokens_of(want)
    assert spec.stats().num_draft_tokens_accepted_total > before, "the grammar's repeats were meant to be drafted"
    assert spec.block_manager.num_used_blocks == 0


# ----- the sampled distribution -----
# chi-square 0.9999 quantiles (df -> bound): a correct sampler fails one check in 10^4 runs.
CHI2_BOUND = {1: 15.14, 2: 18.42, 3: 21.11, 4: 23.51, 5: 25.74}


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic of observed counts against probs, over categories with probability > 0."""
    support = probs > 0
    assert counts[~support].sum() == 0, "a token outside the distribution's support was drawn"
    expected = probs[support] * counts.sum()
    return float(((counts[support] - expected) ** 2 / expected).sum()), int(support.sum()) - 1


ROW_LOGITS = torch.tensor([[2.0, 1.2, 0.9, 0.1, -0.3, -2.0],
                           [0.3, 1.5, 0.2, 1.1, -1.0, 0.6],
                           [1.0, 0.0, 2.0, 0.5, 0.4, -0.5]])  # rows after 0, 1, 2 drafts
DRAFTS = [1, 3]  # deterministic drafts: token 1 (second most likely at row 0), then token 3
TEMPERATURE, TOP_K = 0.8, 4


def target_probs() -> torch.Tensor:
    """The target distribution of each row, computed independently of the sampler: top-k of softmax(l / T)."""
    scaled = ROW_LOGITS / TEMPERATURE
    kth = scaled.topk(TOP_K, dim=-1).values[:, -1:]
    return torch.softmax(scaled.masked_fill(scaled < kth, float("-inf")), dim=-1)


def verified_samples(n: int) -> list[list[int]]:
    """Each of n seeded requests verifies DRAFTS against ROW_LOGITS through Sampler.verify (the real pipeline)."""
    from server.sampler import Sampler

    sampler = Sampler("cpu")
    params = SamplingParams(do_sample=True, temperature=TEMPERATURE, top_k=TOP_K)
    seqs = []
    for i in range(n):
        seq = Sequence(EngineRequest(f"s{i}", (1, 2), SamplingParams(**{**params.__dict__, "seed": i})), i)
        sampler.init_sequence(seq)
        seqs.append(seq)
    logits = ROW_LOGITS.repeat(n, 1)  # (3n, vocab)
    return [[t.token_id for t in ts] for ts in sampler.verify(logits, seqs, [DRAFTS] * n, ())]


def distribution_checks(samples: list[list[int]]) -> list[float]:
    """chi-square / bound for: the first token (~ p0), the second given d0 kept (~ p1), the third given both (~ p2).
    A value above 1 means the samples do not follow the target distribution."""
    p = target_probs()
    ratios = []
    for j in range(3):
        reached = [s for s in samples if s[:j] == DRAFTS[:j] and len(s) > j]
        counts = torch.bincount(torch.tensor([s[j] for s in reached]), minlength=p.shape[1]).float()
        stat, df = chi_square(counts, p[j])
        ratios.append(stat / CHI2_BOUND[df])
    return ratios


def test_rejection_sampling_keeps_the_target_distribution():
    samples = verified_samples(6000)
    assert all(len(s) <= 3 for s in samples)
    assert sum(s[:1] == DRAFTS[:1] for s in samples) > 1000  # enough reach rows 1 and 2
    assert all(r < 1 for r in distribution_checks(samples)), distribution_checks(samples)


def test_the_distribution_check_catches_a_missing_correction():
    """The check's power: 'on rejection, sample from p' (d not removed) over-produces the draft and must fail."""
    p = target_probs()
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(6000):
        out = []
        for j in range(3):
            if j < 2 and torch.rand(1, generator=gen).item() < p[j, DRAFTS[j]]:
                out.append(DRAFTS[j])
                continue
            out.append(int(torch.multinomial(p[j], 1, generator=gen)))  # wrong: should exclude DRAFTS[j]
            break
        samples.append(out)
    assert max(distribution_checks(samples)) > 1


def test_drafts_respect_the_length_budget_and_grammar():
    spec = Speculator(4, max_total_tokens=100, eos_token_ids=(2,))
    seq = Sequence(EngineRequest("x", (1, 5, 6, 7, 5, 6, 7, 2, 9, 5, 6), SamplingParams(max_new_tokens=3)), 0)
    seq.draft = DraftState(accept_rate=1.0)  # a record of full acceptance: all 4 drafts allowed
    assert spec.drafts(seq, 1) == [7, 2]  # room: 3 - 0 - 1 = 2 drafts; the EOS ends them anyway
    seq.params = SamplingParams(max_new_tokens=50)
    assert spec.drafts(seq, 1) == [7, 2]  # cut after the stop token
    seq.params = SamplingParams(max_new_tokens=50, ignore_eos=True)
    assert spec.drafts(seq, 1) == [7, 2, 9, 5]
    assert spec.drafts(seq, MAX_BATCH + 1) == []


def test_low_acceptance_backs_off_then_probes():
    spec = Speculator(5, max_total_tokens=1000, eos_token_ids=(2,))
    state = DraftState()
    assert spec.num_drafts(state, 1) == 4  # the hopeful start
    for _ in range(10):
        state.record(5, 5)
    assert spec.num_drafts(state, 1) == 5 and spec.num_drafts(state, MAX_BATCH) == 5
    for _ in range(10):
        state.record(5, 0)
    counts = [spec.num_drafts(state, 1) for _ in range(16)]
    assert sum(counts) == 2 and max(counts) == 1  # one probe every PROBE_EVERY steps


def test_cli_flag_and_env_var():
    from router.cli import CliError, parse_args

    assert parse_args(["--speculate", "3"], {})[0].speculate == 3
    assert parse_args([], {"SPECULATE": "2"})[0].speculate == 2
    assert parse_args([], {})[0].speculate == 0
    with pytest.raises(CliError, match="speculate"):
        parse_args(["--speculate", "-1"], {})


def test_http_info_and_acceptance_metrics(make_client):
    import httpx

    from router.app import create_app
    from router.config import RouterConfig
    from tests.live_server import LiveServer

    client = make_client(speculate=4)
    try:
        with LiveServer(create_app(client, RouterConfig())) as live:
            assert httpx.get(live.url + "/info").json()["speculate"] == 4
            body = {"inputs": "12+34=46. 12+34=46. 12+34=46. 12+34=46.", "parameters": {"max_new_tokens": 40}}
            r = httpx.post(live.url + "/generate", json={**body, "parameters": {**body["parameters"],
                                                                                "details": True}}, timeout=60)
            assert r.status_code == 200 and r.json()["details"]["generated_tokens"] == 40
            full = [t["id"] for t in r.json()["details"]["tokens"]]
            text = r.json()["generated_text"]
            stop = text[len(text) // 2:len(text) // 2 + 3]  # ends mid-generation, likely inside a verified burst
            r = httpx.post(live.url + "/generate", json={**body, "parameters": {
                **body["parameters"], "details": True, "stop": [stop]}}, timeout=60).json()
            tokens = [t["id"] for t in r["details"]["tokens"]]
            assert r["details"]["finish_reason"] == "stop_sequence" and r["generated_text"].endswith(stop)
            assert tokens == full[:len(tokens)] and stop not in "".join(
                t["text"] for t in r["details"]["tokens"][:-1])  # nothing past the token completing the stop
            metrics = httpx.get(live.url + "/metrics").text
            values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                      if line.startswith("tgi_speculative_")}
            assert values["tgi_speculative_draft_tokens"] > 0
            assert 0 < values["tgi_speculative_accepted_tokens"] <= values["tgi_speculative_draft_tokens"]
    finally:
        client.shutdown()


@pytest.mark.parametrize("attention,lengths,max_new", [("triton", [12, 30], [10, 14]),
                                                        ("torch", [12, 30, 50, 70, 90], [30, 25, 20, 35, 40])])
def test_other_attention_paths_verify_drafts_alike(tiny_llama_dir, plain, attention, lengths, max_new):
    """--attention triton (TRITON_INTERPRET=1 on CPU: draft rows go through its chunked-prefill kernel) and torch
    (padded multi-row decode groups) against the default path without speculation."""
    tri = spec_engine(tiny_llama_dir, 4, attention=attention, max_batch_prefill_tokens=64)
    ps = repetitive_prompts(plain.checkpoint.tokenizer, lengths, seed=5)
    reqs = greedy_requests(ps, max_new)
    want, got = plain.generate(reqs), tri.generate(reqs)
    for r in reqs:
        assert tokens_of(got[r.request_id]) == tokens_of(want[r.request_id])
    assert tri.stats().num_draft_tokens_accepted_total > 0
