"""Decode CUDA graphs: padding to the next captured size, and the captured computation run eagerly on CPU.

Capture itself needs CUDA (run by bench/gpu.sh); what a graph replays is `DecodeGraphs.forward_static` over the static
buffers, which runs anywhere: padded to a captured size, it must give the same hidden states as the unpadded eager
forward and leave the KV cache exactly as the eager forward does (padding rows write nothing).
"""
from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="CUDA graphs run the triton attention path")

from server.cuda_graphs import DecodeGraphs, padded_batch_size  # noqa: E402
from server.engine import Engine  # noqa: E402
from server.protocol import EngineRequest, SamplingParams  # noqa: E402

SIZES = [1, 2, 4, 8]


def test_padded_batch_size():
    sizes = [1, 2, 4, 8, 16, 32]
    assert [padded_batch_size(n, sizes) for n in (1, 2, 3, 5, 8, 9, 17, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert padded_batch_size(33, sizes) is None
    graphs = DecodeGraphs(None, [], None, None, [8, 2, 4, 2], max_seq_len=64, block_size=16, device="cpu")
    assert graphs.sizes == [2, 4, 8] and graphs.block_tables.shape == (8, 4)


@pytest.fixture
def engine(make_engine):
    """A fresh engine per test: the tests schedule steps they never commit."""
    return make_engine(dtype="float32", attention="triton", max_batch_total_tokens=2048)


def step_inputs(engine: Engine, prompt_lens: list[int], tag: str):
    """Prefill `prompt_lens` prompts in one engine step, then schedule their first decode step (not run)."""
    for i, n in enumerate(prompt_lens):
        prompt = tuple(1 + (7 * i + 3 * j) % 1000 for j in range(n))
        engine.submit(EngineRequest(f"{tag}{i}", prompt, SamplingParams(max_new_tokens=64, ignore_eos=True)))
    engine.step()
    chunks = engine.scheduler.schedule().chunks
    assert [c.num_new_tokens for c in chunks] == [1] * len(prompt_lens)
    return engine.runner.prepare(chunks)


def graphs_for(engine: Engine) -> DecodeGraphs:
    r = engine.runner
    return DecodeGraphs(r.model, r.kv_caches, r.attn_fn, r.write_fn, SIZES, max_seq_len=512,
                        block_size=r.block_size, device=r.device)


def snapshot(caches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.clone(), v.clone()) for k, v in caches]


def restore(caches, saved) -> None:
    for (k, v), (k0, v0) in zip(caches, saved):
        k.copy_(k0)
        v.copy_(v0)


def test_padded_static_forward_matches_eager(engine):
    inputs = step_inputs(engine, [5, 20, 37], "a")
    caches = engine.runner.kv_caches
    before = snapshot(caches)
    want = engine.runner.forward(inputs)  # (3, hidden), eager, unpadded
    after_eager = snapshot(caches)
    restore(caches, before)
    graphs = graphs_for(engine)
    assert graphs.can_run(inputs.meta)
    size = graphs.stage(inputs.input_ids, inputs.positions, inputs.meta)
    assert size == 4
    with torch.inference_mode():
        got = graphs.forward_static(size)
    assert got.shape[0] == 4
    tol = 1e-4 if got.is_cuda else 1e-5  # on CUDA a padded batch may pick other GEMM kernels
    torch.testing.assert_close(got[:3], want, rtol=tol, atol=tol)
    for (k, v), (k1, v1) in zip(caches, after_eager):  # padding rows wrote nothing
        torch.testing.assert_close(k, k1, rtol=tol, atol=tol)
        torch.testing.assert_close(v, v1, rtol=tol, atol=tol)


def test_stage_resets_rows_left_from_a_larger_batch(make_engine, engine):
    graphs = graphs_for(engine)
    big = step_inputs(engine, [3, 4, 5, 6], "b")
    assert graphs.stage(big.input_ids, big.positions, big.meta) == 4
    other = make_engine(attention="triton", max_batch_total_tokens=2048)
    small = step_inputs(other, [7, 8, 9], "c")
    assert graphs.stage(small.input_ids, small.positions, small.meta) == 4
    assert graphs.slot_mapping[3].item() == -1 and graphs.seq_lens[3].item() == 0
    assert torch.equal(graphs.slot_mapping[:3], small.meta.slot_mapping)
    assert torch.equal(graphs.seq_lens[:3], small.meta.seq_lens)


def test_only_pure_decode_batches_that_fit_are_replayed(make_engine, engine):
    graphs = graphs_for(engine)
    decode = step_inputs(engine, [2] * 9, "e")
    assert not graphs.can_run(decode.meta)  # 9 rows > the largest captured size 8
    assert graphs.can_run(replace(decode.meta, query_lens=[1] * 8))
    assert not graphs.can_run(replace(decode.meta, query_lens=[1] * 8, max_seq_len=513))  # longer than captured
    other = make_engine(attention="triton", max_batch_total_tokens=2048)
    for i in range(3):
        other.submit(EngineRequest(f"d{i}", tuple(range(1, 30)), SamplingParams(max_new_tokens=4, ignore_eos=True)))
    other.step()
    for i in range(2):  # a new prompt joins the running decodes: a mixed step runs eagerly
        other.submit(EngineRequest(f"n{i}", tuple(range(1, 9)), SamplingParams(max_new_tokens=4, ignore_eos=True)))
    other._drain_inbox([])
    mixed = other.runner.prepare(other.scheduler.schedule().chunks)
    assert sorted(mixed.meta.query_lens) == [1, 1, 1, 8, 8] and not graphs.can_run(mixed.meta)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (bench/gpu.sh runs this)")
def test_captured_graph_replays_the_eager_forward(engine):
    inputs = step_inputs(engine, [5, 20, 37], "g")
    caches = engine.runner.kv_caches
    before = snapshot(caches)
    want = engine.runner.forward(inputs).clone()
    after_eager = snapshot(caches)
    restore(caches, before)
    graphs = graphs_for(engine).capture()
    assert sorted(graphs.graphs) == SIZES
    got = graphs.run(inputs.input_ids, inputs.positions, inputs.meta)  # padded 3 -> 4
    # A padded batch may pick other GEMM kernels: equal up to float32 rounding.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for (k, v), (k1, v1) in zip(caches, after_eager):
        torch.testing.assert_close(k, k1, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(v, v1, rtol=1e-4, atol=1e-4)
    restore(caches, after_eager)  # replay once more from the same state: graphs are deterministic
    again = graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
    assert torch.equal(again, got)
