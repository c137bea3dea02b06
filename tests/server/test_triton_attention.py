"""Triton paged-attention kernels against the torch reference (`server.attention`), on random paged caches.

Without CUDA the kernels run under TRITON_INTERPRET=1 (set here, before triton is imported). Each case scatters
sequences over a shuffled block pool whose unused slots hold garbage, so a kernel reading outside a sequence's
context or the wrong block shows up as an error. Float32 outputs must agree within 1e-5 relative error.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="attention=triton needs the triton package")

from server import triton_attention as ta  # noqa: E402
from server.attention import AttentionMetadata, paged_attention, write_kv  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REL_TOL = 1e-5


@dataclass
class Case:
    head_dim: int
    num_kv_heads: int
    group: int  # query heads per KV head
    block_size: int
    seqs: list[tuple[int, int]]  # (cached tokens, new tokens) per sequence
    window: int | None = None
    dtype: torch.dtype = torch.float32


def build(case: Case, seed: int = 0):
    """Random query/new K,V, a garbage-filled block pool, and the step's metadata."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    bs, num_heads = case.block_size, case.num_kv_heads * case.group
    blocks_needed = [-(-(c + n) // bs) for c, n in case.seqs]
    pool = list(range(sum(blocks_needed) + 3))
    rng.shuffle(pool)  # sequences get scattered, non-contiguous blocks
    tables, slots, starts = [], [], [0]
    for (cached, new), nb in zip(case.seqs, blocks_needed):
        table = [pool.pop() for _ in range(nb)]
        tables.append(table)
        slots += [table[p // bs] * bs + p % bs for p in range(cached, cached + new)]
        starts.append(starts[-1] + new)
    width = max(len(t) for t in tables)
    shape = (len(pool) + sum(blocks_needed), bs, case.num_kv_heads, case.head_dim)
    rand = lambda *s: torch.randn(*s, generator=gen).to(case.dtype)  # noqa: E731
    num_tokens = starts[-1]
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64), query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor([c + n for c, n in case.seqs], dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        max_query_len=max(n for _, n in case.seqs), max_seq_len=max(c + n for c, n in case.seqs),
        query_lens=[n for _, n in case.seqs], seq_lens_list=[c + n for c, n in case.seqs])
    kv_shape = (num_tokens, case.num_kv_heads, case.head_dim)
    tensors = dict(query=rand(num_tokens, num_heads, case.head_dim), key=rand(*kv_shape), value=rand(*kv_shape),
                   k_cache=rand(*shape), v_cache=rand(*shape))
    return {k: v.to(DEVICE) for k, v in tensors.items()}, _to(meta, DEVICE)


def _to(meta: AttentionMetadata, device: str) -> AttentionMetadata:
    for name in ("slot_mapping", "query_start_loc", "seq_lens", "block_tables"):
        setattr(meta, name, getattr(meta, name).to(device))
    return meta


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def check(case: Case, seed: int = 0, tol: float = REL_TOL) -> None:
    t, meta = build(case, seed)
    scale = case.head_dim ** -0.5
    k_ref, v_ref = t["k_cache"].clone(), t["v_cache"].clone()
    write_kv(t["key"], t["value"], k_ref, v_ref, meta.slot_mapping)
    ta.write_kv_triton(t["key"], t["value"], t["k_cache"], t["v_cache"], meta.slot_mapping)
    assert torch.equal(t["k_cache"], k_ref) and torch.equal(t["v_cache"], v_ref), "write_kv differs"
    got = ta.paged_attention_triton(t["query"], t["k_cache"], t["v_cache"], meta, scale, case.window)
    want = paged_attention(t["query"], k_ref, v_ref, meta, scale, case.window)
    assert got.shape == want.shape and torch.isfinite(got).all()
    err = rel_error(got, want)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e} for {case}"


@pytest.fixture(params=["small_tiles", "default_tiles"])
def tiles(request, monkeypatch):
    """Small tiles put many tile, partition and block boundaries inside tiny contexts (and keep the interpreter
    fast); the default sizes are the ones the GPU runs."""
    if request.param == "small_tiles":
        monkeypatch.setattr(ta, "PARTITION_SIZE", 32)
        monkeypatch.setattr(ta, "DECODE_BLOCK_N", 16)
        monkeypatch.setattr(ta, "PREFILL_BLOCK_M", 16)
        monkeypatch.setattr(ta, "PREFILL_BLOCK_N", 16)
    return request.param


# Context lengths: 1, block multiples (16, 32, 64), non-multiples (5, 33, 47, 70, 100); decode, whole prompts,
# chunks over a cached prefix (prefix-cache hits, later chunks of a chunked prefill), all in one batch.
MIXED = [(0, 1), (15, 1), (31, 1), (69, 1), (0, 5), (0, 32), (16, 17), (32, 32), (48, 22), (99, 1)]


@pytest.mark.parametrize("tiles", ["small_tiles"], indirect=True)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [16, 32])
def test_mixed_batch_matches_torch(tiles, head_dim, group, block_size):
    check(Case(head_dim, num_kv_heads=2 if group < 8 else 1, group=group, block_size=block_size, seqs=MIXED),
          seed=head_dim + group + block_size)


@pytest.mark.parametrize("tiles", ["default_tiles"], indirect=True)
@pytest.mark.parametrize(("head_dim", "group", "block_size"), [(64, 8, 16), (128, 4, 32), (128, 1, 16)])
def test_mixed_batch_default_tiles(tiles, head_dim, group, block_size):
    check(Case(head_dim, num_kv_heads=2 if group < 8 else 1, group=group, block_size=block_size, seqs=MIXED),
          seed=head_dim * group + block_size)


@pytest.mark.parametrize("window", [1, 8, 24])
def test_sliding_window(tiles, window):
    # Windows shorter than, equal to and spanning tiles; contexts shorter and longer than the window.
    seqs = [(0, 1), (40, 1), (70, 1), (0, 40), (30, 25), (5, 3)]
    check(Case(64, num_kv_heads=2, group=4, block_size=16, seqs=seqs, window=window), seed=window)


def test_decode_only_and_prefill_only_batches(tiles):
    check(Case(64, 2, 4, 16, seqs=[(c, 1) for c in (0, 16, 40, 63, 100)]), seed=1)
    check(Case(64, 2, 4, 16, seqs=[(0, 21), (16, 16), (7, 40)]), seed=2)


def test_long_decode_splits_and_merges_partitions():
    # Default tiles: 600 tokens is three 256-token partitions merged by their log-sum-exp.
    check(Case(64, 1, 4, 16, seqs=[(599, 1), (300, 1), (1, 1)]), seed=3)
    check(Case(64, 1, 4, 16, seqs=[(599, 1), (260, 1)], window=300), seed=4)


def test_bfloat16_cache_and_queries(tiles):
    # bf16 inputs with float32 accumulation: compared against the float32 reference on the same bf16 values.
    case = Case(64, 2, 4, 16, seqs=MIXED[:6], dtype=torch.bfloat16)
    t, meta = build(case, seed=5)
    ta.write_kv_triton(t["key"], t["value"], t["k_cache"], t["v_cache"], meta.slot_mapping)
    got = ta.paged_attention_triton(t["query"], t["k_cache"], t["v_cache"], meta, 0.125, None)
    want = paged_attention(t["query"].float(), t["k_cache"].float(), t["v_cache"].float(), meta, 0.125, None)
    assert got.dtype == torch.bfloat16
    assert rel_error(got, want) < 2e-2


def test_padding_rows_are_skipped():
    # CUDA-graph padding rows: slot -1 writes nothing; seq_len 0 rows are not attended and touch nothing.
    t, meta = build(Case(64, 2, 4, 16, seqs=[(10, 1), (20, 1)]), seed=6)
    before = t["k_cache"].clone()
    slots = meta.slot_mapping.clone()
    slots[1] = -1
    ta.write_kv_triton(t["key"], t["value"], t["k_cache"], t["v_cache"], slots)
    changed = (t["k_cache"] != before).flatten(1).any(1).nonzero().flatten().tolist()
    block0 = meta.block_tables[0, 0].item()
    assert changed == [block0], "only the real row's block may change"
    meta.seq_lens[1] = 0
    out = ta.paged_attention_triton(t["query"], t["k_cache"], t["v_cache"], meta, 0.125, None)
    want = paged_attention(t["query"], t["k_cache"], t["v_cache"], meta, 0.125, None)
    assert rel_error(out[0], want[0]) <= REL_TOL  # the real row is unaffected by its padding neighbour


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ta.TritonUnavailableError, match="TRITON_INTERPRET=1"):
        ta.check_device("cpu")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_random_sweep(seed):
    """Larger random sweep (run from the benchmarks): random shapes, lengths up to 700, windows, default tiles."""
    rng = random.Random(seed)
    group = rng.choice([1, 2, 4, 8])
    seqs = [(rng.choice([0, rng.randrange(0, 600)]), rng.choice([1, 1, rng.randrange(1, 100)])) for _ in range(6)]
    window = rng.choice([None, None, rng.randrange(1, 300)])
    check(Case(rng.choice([64, 128]), rng.choice([1, 2]), group, rng.choice([16, 32]), seqs, window), seed=seed)


# Compiles each kernel for Hopper (sm_90) with triton's bundled ptxas: no GPU needed, and it catches what the
# interpreter accepts but a GPU build rejects (tl.dot shapes, types, control flow). Arguments are typed by name.
COMPILE_FOR_HOPPER = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import server.triton_attention as ta

INT_POINTERS = {"slot_mapping": "*i64", "block_tables": "*i32", "seq_lens": "*i32", "query_start_loc": "*i32"}

def arg_type(name):
    if name.isupper():
        return "constexpr"
    if name == "scale_log2":
        return "fp32"
    if name.startswith("stride_") or name == "window":
        return "i32"
    return INT_POINTERS.get(name, "*fp32" if name.startswith("tmp_") else "*bf16")

common = dict(HEAD_DIM=64, DIM_PAD=64, BLOCK_SIZE=16, PRECISION="tf32", UPCAST=False)
variants = [
    (ta._write_kv_kernel, dict(NUM_KV_HEADS=4, HEAD_DIM=64, HEADS_PAD=4, DIM_PAD=64)),
    (ta._decode_kernel, dict(common, NUM_HEADS=32, GROUP=8, GROUP_PAD=16, BLOCK_N=ta.DECODE_BLOCK_N,
                             PARTITION=ta.PARTITION_SIZE, NUM_PARTITIONS=1, HAS_WINDOW=False)),
    (ta._decode_kernel, dict(common, NUM_HEADS=32, GROUP=8, GROUP_PAD=16, BLOCK_N=ta.DECODE_BLOCK_N,
                             PARTITION=ta.PARTITION_SIZE, NUM_PARTITIONS=8, HAS_WINDOW=True)),
    (ta._merge_kernel, dict(NUM_HEADS=32, HEAD_DIM=64, DIM_PAD=64, PARTITION=ta.PARTITION_SIZE, NUM_PARTITIONS=8,
                            PARTS_PAD=8, HAS_WINDOW=True)),
    (ta._prefill_kernel, dict(common, GROUP=8, BLOCK_M=ta.PREFILL_BLOCK_M, BLOCK_N=ta.PREFILL_BLOCK_N,
                              HAS_WINDOW=True)),
]
for kernel, constexprs in variants:
    signature = {name: arg_type(name) for name in kernel.arg_names}
    triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32))
print("compiled", len(variants))
"""


def test_kernels_compile_for_hopper():
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "compiled 5" in done.stdout, done.stderr[-3000:]
