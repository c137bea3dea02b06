"""The CPU fast path of the Llama forward (server/cpu_ops.py, server/csrc/fused_ops.cpp): each fused op against its
plain torch formula within 1e-5, the column-major weight layout, the whole model (fast path on) against the
reference path, and the default CPU thread count (server/cpu_threads.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from server import cpu_attention, cpu_ops

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def built():
    if cpu_attention._compiler() is None:
        pytest.skip("no C++ compiler on this machine: the model falls back to the torch formulas")
    assert cpu_attention.available(), "a compiler is there, so the extension must build"


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.allclose(got, want, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("rows,hidden", [(1, 64), (32, 256), (3, 100), (700, 128)])  # 700 x 128: several threads
def test_rms_norm_matches_the_torch_formula(rows, hidden):
    torch.manual_seed(rows)
    x, w = torch.randn(rows, hidden) * 3, torch.randn(hidden)
    assert close(cpu_ops.rms_norm(x, w, 1e-5), cpu_ops.rms_norm_reference(x, w, 1e-5))


def test_rms_norm_reads_a_strided_row_view():
    x, w = torch.randn(8, 96), torch.randn(48)
    view = x[:, 16:64]  # rows 96 apart, each contiguous
    assert close(cpu_ops.rms_norm(view, w, 1e-6), cpu_ops.rms_norm_reference(view, w, 1e-6))


@pytest.mark.parametrize("rows,hidden", [(1, 64), (32, 256), (500, 128)])
def test_add_rms_norm_adds_into_the_residual_and_normalises_the_sum(rows, hidden):
    torch.manual_seed(hidden)
    x, residual, w = torch.randn(rows, hidden), torch.randn(rows, hidden), torch.randn(hidden)
    want_sum = residual + x
    out = cpu_ops.add_rms_norm_(x, residual, w, 1e-5)
    assert torch.equal(residual, want_sum)  # one float32 add per element, as x + residual
    assert close(out, cpu_ops.rms_norm_reference(want_sum, w, 1e-5))


@pytest.mark.parametrize("rows,inter", [(1, 16), (32, 688), (5, 37), (400, 336)])
def test_silu_and_mul_matches_the_torch_formula(rows, inter):
    torch.manual_seed(inter)
    gate_up = torch.randn(rows, 2 * inter) * 6  # large |x|: both branches of the stable sigmoid
    gate_up[0, 0], gate_up[0, 1] = -100.0, 100.0
    assert close(cpu_ops.silu_and_mul(gate_up), cpu_ops.silu_and_mul_reference(gate_up))


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(8, 8, 32), (4, 2, 16), (8, 1, 64), (2, 2, 80)])
def test_rotary_rotates_q_and_k_in_place_and_leaves_v(heads, kv_heads, head_dim):
    torch.manual_seed(head_dim)
    tokens, max_pos = 19, 300
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), torch.rand(head_dim // 2))
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    positions = torch.randint(0, max_pos, (tokens,))
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    qkv = torch.randn(tokens, q_size + 2 * kv_size)
    q, k, v = (t.reshape(tokens, -1, head_dim) for t in qkv.clone().split([q_size, kv_size, kv_size], dim=-1))
    c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    cpu_ops.rotary_(qkv, positions, cos, sin, heads + kv_heads, head_dim)
    got_q, got_k, got_v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    assert close(got_q.reshape(q.shape), cpu_ops.rotary_reference(q, c, s))
    assert close(got_k.reshape(k.shape), cpu_ops.rotary_reference(k, c, s))
    assert torch.equal(got_v.reshape(v.shape), v)


def test_bad_inputs_raise_instead_of_reading_out_of_bounds():
    cos = sin = torch.zeros(10, 8)
    with pytest.raises(RuntimeError, match="outside the table"):
        cpu_ops.rotary_(torch.zeros(2, 16), torch.tensor([0, 10]), cos, sin, 2, 8)
    with pytest.raises(RuntimeError, match="float32"):
        cpu_ops.rms_norm(torch.zeros(2, 8, dtype=torch.float64), torch.ones(8), 1e-5)
    with pytest.raises(RuntimeError, match="even number"):
        cpu_ops.silu_and_mul(torch.zeros(2, 7))


def test_column_major_weights_keep_values_shapes_and_ties():
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 50, bias=False), nn.Linear(16, 8))
    model[1].weight = model[0].weight  # tied, as lm_head and embed_tokens
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(3, 16)
    want = model[2](x)
    cpu_ops.use_column_major_weights(model)
    assert model[1].weight is model[0].weight
    assert not model[2].weight.is_contiguous() and model[2].weight.t().is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert close(model[2](x), want)
    assert torch.equal(model[0](torch.tensor([3, 49])), before[0][[3, 49]])


def test_packed_linears_compute_the_same_and_keep_parameters_and_ties(monkeypatch):
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 50, bias=False), nn.Linear(16, 8))
    model[1].weight = model[0].weight  # tied, as lm_head and embed_tokens
    params = list(model.parameters())
    x = torch.randn(5, 16)
    want = [model[1](x), model[2](x), model[2](x[:1]), model[2](x.view(5, 1, 16))]
    monkeypatch.setattr(cpu_ops, "_time", lambda linear, *_: 1.0 if isinstance(linear, cpu_ops.PackedLinear) else 2.0)
    assert "2 of 2" in cpu_ops.use_fast_linears(model)  # both timed faster packed (here: told so)
    assert all(isinstance(model[i], cpu_ops.PackedLinear) for i in (1, 2))
    assert list(model.parameters()) == params and model[1].weight is model[0].weight
    got = [model[1](x), model[2](x), model[2](x[:1]), model[2](x.view(5, 1, 16))]
    assert all(g.shape == w.shape and close(g, w) for g, w in zip(got, want))
    strided = torch.randn(7, 32)[:, ::2]  # a non-contiguous row view
    assert close(model[2](strided), strided @ model[2].weight.t() + model[2].bias)


def test_fast_linears_pack_what_times_faster_and_fall_back_without_onednn(monkeypatch):
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(256, 8000, bias=False))
    x = torch.randn(3, 256)
    want = model[1](x)
    monkeypatch.setenv(cpu_ops.ONEDNN_DISABLE_ENV, "1")
    assert cpu_ops.use_fast_linears(model) == "column-major linear weights"
    assert type(model[0]) is nn.Linear and model[0].weight.t().is_contiguous()
    monkeypatch.delenv(cpu_ops.ONEDNN_DISABLE_ENV)
    monkeypatch.setattr(cpu_ops, "_time", lambda linear, *_: 1.0 if isinstance(linear, cpu_ops.PackedLinear) else 2.0)
    assert "2 of 2" in cpu_ops.use_fast_linears(model)  # packed where (here: told) faster
    assert all(isinstance(m, cpu_ops.PackedLinear) for m in model)
    assert close(model[1](x), want)
    slow = nn.Sequential(nn.Linear(16, 8))
    monkeypatch.setattr(cpu_ops, "_time", lambda linear, *_: 2.0 if isinstance(linear, cpu_ops.PackedLinear) else 1.0)
    assert "0 of 1" in cpu_ops.use_fast_linears(slow) and type(slow[0]) is nn.Linear


def test_disabled_by_env_or_off_cpu_float32(monkeypatch):
    cpu = torch.device("cpu")
    assert cpu_ops.enabled(cpu, torch.float32)
    assert not cpu_ops.enabled(cpu, torch.bfloat16)
    monkeypatch.setenv(cpu_ops.DISABLE_ENV, "1")
    assert not cpu_ops.enabled(cpu, torch.float32)


@pytest.mark.parametrize("checkpoint", ["tiny_llama_dir", "tiny_mistral_dir"])  # GQA untied; window + tied
def test_the_engine_takes_the_fast_path_and_matches_the_reference_path(request, make_engine, monkeypatch, checkpoint):
    path = str(request.getfixturevalue(checkpoint))
    prompt = [1] + list(range(10, 90))
    fast = make_engine(model_id=path)
    got = fast.prompt_logits(prompt)
    assert fast.runner.model.fused is True
    monkeypatch.setenv(cpu_ops.DISABLE_ENV, "1")
    plain = make_engine(model_id=path)
    want = plain.prompt_logits(prompt)
    assert plain.runner.model.fused is False
    assert torch.allclose(got, want, atol=TOL, rtol=0), (got - want).abs().max()


def test_default_threads_follow_the_affinity_mask_and_the_cgroup_quota(tmp_path, monkeypatch):
    from server import cpu_threads

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert cpu_threads.cgroup_cpu_quota(cpu_max) is None
    cpu_max.write_text("150000 100000\n")
    assert cpu_threads.cgroup_cpu_quota(cpu_max) == 1.5
    monkeypatch.setattr(cpu_threads, "affinity_cpus", lambda: 16)
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_quota", lambda: 1.5)
    assert cpu_threads.default_num_threads() == 2  # a 1.5-CPU container on a 16-core host
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_quota", lambda: None)
    assert cpu_threads.default_num_threads() == 16


def test_the_engine_applies_the_default_unless_told(make_engine, monkeypatch):
    from server import engine as engine_module

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(engine_module, "default_num_threads", lambda: 1)
        make_engine()
        assert torch.get_num_threads() == 1
        make_engine(num_threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_step_threads_small_steps_run_on_one_thread():
    from server.cpu_threads import PARALLEL_STEP_MACS, StepThreads

    policy = StepThreads(4, linear_macs_per_token=1_000_000, attention_macs_per_key=1_000)
    assert policy.threads_for(num_tokens=1, num_keys=200) == 1  # one decode row of a 1M-weight model
    assert policy.threads_for(num_tokens=32, num_keys=32 * 200) == 4  # 32 rows: ~38M multiply-adds
    assert policy.threads_for(num_tokens=1, num_keys=PARALLEL_STEP_MACS) == 4  # a long context alone is enough


def test_the_engine_switches_threads_per_step(make_engine):
    from server.protocol import EngineRequest, SamplingParams

    before = torch.get_num_threads()
    try:
        engine = make_engine(num_threads=2)
        assert engine.step_threads is not None
        engine.step_threads.linear_macs_per_token = 100_000  # the tiny test model: pretend 0.1M weights
        engine.submit(EngineRequest("long", tuple(range(3, 403)), SamplingParams(max_new_tokens=2)))
        engine.step()  # a 400-token prefill: 40M multiply-adds
        assert torch.get_num_threads() == 2
        engine.step()  # one decode row
        assert torch.get_num_threads() == 1
        assert make_engine(num_threads=1).step_threads is None
    finally:
        torch.set_num_threads(before)
