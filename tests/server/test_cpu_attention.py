"""The C++ CPU paged-attention operator (server/cpu_attention.py) against the pure-torch reference (server.attention).

Each case scatters sequences over a shuffled block pool whose unused slots hold random garbage, so reading outside a
sequence's context or through the wrong block shows up as an error; outputs must agree within 1e-5 relative error.
The operator is built once into the persistent cache (about 15 s on the first run, then loaded in well under a
second). The fallback cases run in subprocesses, since a loaded operator stays loaded for the life of a process.
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

from server import cpu_attention
from server.attention import AttentionMetadata, paged_attention

REL_TOL = 1e-5
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    head_dim: int
    num_heads: int
    num_kv_heads: int
    block_size: int
    seqs: list[tuple[int, int]]  # (cached tokens, new tokens) per sequence
    window: int | None = None
    cache_dtype: torch.dtype = torch.float32


def build(case: Case, seed: int = 0):
    """Random query (as a strided view, like the model's qkv split), a garbage-filled cache and the step's metadata."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    bs = case.block_size
    needed = [-(-(c + n) // bs) for c, n in case.seqs]
    pool = list(range(sum(needed) + 5))
    rng.shuffle(pool)  # non-contiguous, out-of-order blocks per sequence
    tables, starts = [], [0]
    for (_, new), nb in zip(case.seqs, needed):
        tables.append([pool.pop() for _ in range(nb)])
        starts.append(starts[-1] + new)
    width = max(len(t) for t in tables)
    lens = [c + n for c, n in case.seqs]
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(starts[-1], dtype=torch.int64),  # unused: nothing is written here
        query_start_loc=torch.tensor(starts, dtype=torch.int32), seq_lens=torch.tensor(lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        max_query_len=max(n for _, n in case.seqs), max_seq_len=max(lens),
        query_lens=[n for _, n in case.seqs], seq_lens_list=lens)
    shape = (sum(needed) + 5, bs, case.num_kv_heads, case.head_dim)
    k_cache = torch.randn(*shape, generator=gen).to(case.cache_dtype)
    v_cache = torch.randn(*shape, generator=gen).to(case.cache_dtype)
    q_size = case.num_heads * case.head_dim
    qkv = torch.randn(starts[-1], q_size + 2 * case.num_kv_heads * case.head_dim, generator=gen)
    query = qkv[:, :q_size].view(-1, case.num_heads, case.head_dim)  # row stride > num_heads * head_dim
    return query, k_cache, v_cache, meta


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.fixture(scope="module")
def built():
    if cpu_attention._compiler() is None:
        pytest.skip("no C++ compiler on this machine: the fallback tests below cover it")
    assert cpu_attention.available(), "a compiler is there, so the operator must build"


DECODE = [(c, 1) for c in (0, 1, 15, 16, 17, 31, 33, 100, 257, 600)]  # one new token after c cached
MIXED = [(0, 1), (40, 9), (0, 37), (130, 1), (17, 16), (5, 1), (0, 3)]  # prompts, chunks over prefixes, decode
CASES = {
    "decode-mha-d32-b16": Case(32, 8, 8, 16, DECODE),
    "decode-gqa-d64-b16": Case(64, 8, 4, 16, DECODE),
    "decode-gqa-d128-b32": Case(128, 8, 4, 32, DECODE),
    "mixed-mha-d64-b32": Case(64, 8, 8, 32, MIXED),
    "mixed-gqa-d32-b16": Case(32, 8, 4, 16, MIXED),
    "mixed-gqa-d128-b16": Case(128, 8, 2, 16, MIXED),
    "window-decode-gqa": Case(64, 8, 4, 16, DECODE, window=24),
    "window-mixed-mha": Case(32, 4, 4, 32, MIXED, window=19),
    "long-prefill-over-prefix": Case(64, 8, 4, 16, [(300, 70), (0, 200), (511, 1)]),
    "bf16-cache-mixed": Case(64, 8, 4, 16, MIXED, cache_dtype=torch.bfloat16),
    "mqa-one-kv-head": Case(32, 8, 1, 16, MIXED),
    "head-dim-80-runtime-path": Case(80, 4, 2, 16, MIXED, window=30),
    "head-dim-40-scalar-dot": Case(40, 4, 2, 16, MIXED),  # not a multiple of 16 floats: the scalar dot product
    # many decode rows: an item carries a run of kv heads (all of them here), each block read once for the run
    "decode-runs-of-heads": Case(32, 8, 4, 16, [(c, 1) for c in range(0, 400, 10)]),
    "bf16-cache-decode-d32": Case(32, 4, 4, 16, DECODE, cache_dtype=torch.bfloat16),  # vector bf16 widening
    # chunks of 17 and 33 new tokens end in a one-row tile (the single-row path at a position inside the chunk)
    "chunk-tail-rows": Case(32, 4, 2, 16, [(40, 17), (0, 33), (3, 1)]),
    "chunk-tail-rows-window": Case(64, 8, 8, 16, [(40, 17), (0, 33), (3, 1)], window=20),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_the_torch_path(built, name):
    case = CASES[name]
    query, k_cache, v_cache, meta = build(case, seed=len(name))
    scale = case.head_dim ** -0.5
    want = paged_attention(query, k_cache, v_cache, meta, scale, case.window)
    got = cpu_attention.paged_attention_cpu(query, k_cache, v_cache, meta, scale, case.window)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert rel_error(got, want) < REL_TOL


@pytest.mark.parametrize("name", ["mixed-gqa-d32-b16", "long-prefill-over-prefix", "window-mixed-mha",
                                  "decode-gqa-d64-b16"])
def test_the_engine_default_splits_long_chunks_to_the_torch_path_and_matches_it(built, name):
    case = CASES[name]
    query, k_cache, v_cache, meta = build(case, seed=len(name) + 1)
    scale = case.head_dim ** -0.5
    want = paged_attention(query, k_cache, v_cache, meta, scale, case.window)
    got = cpu_attention.paged_attention_mixed(query, k_cache, v_cache, meta, scale, case.window)
    assert rel_error(got, want) < REL_TOL
    short, long_ = meta.backend_cache["cpp_split"]
    lens = [new for _, new in case.seqs]
    assert (short is not None) == any(n <= cpu_attention.MAX_OPERATOR_QUERY_LEN for n in lens)
    assert (long_ is not None) == any(n > cpu_attention.MAX_OPERATOR_QUERY_LEN for n in lens)


def test_the_engine_uses_the_operator_on_cpu_by_default(built):
    from server.attention import attention_backend

    assert attention_backend("cpp", "cpu")[0] is cpu_attention.paged_attention_mixed
    assert attention_backend("torch", "cpu")[0] is paged_attention


def test_bf16_query_comes_back_bf16(built):
    query, k_cache, v_cache, meta = build(Case(32, 8, 4, 16, MIXED), seed=3)
    q16 = query.to(torch.bfloat16)
    got = cpu_attention.paged_attention_cpu(q16, k_cache, v_cache, meta, 0.2)
    want = paged_attention(q16.float(), k_cache, v_cache, meta, 0.2)
    assert got.dtype == torch.bfloat16 and rel_error(got.float(), want) < 1e-2  # bf16 rounding of the output


def test_a_block_id_out_of_range_raises_instead_of_reading_past_the_cache(built):
    query, k_cache, v_cache, meta = build(Case(32, 8, 8, 16, [(40, 1)]), seed=1)
    meta.block_tables[0, 1] = k_cache.shape[0]
    with pytest.raises(RuntimeError, match="out of range"):
        cpu_attention.paged_attention_cpu(query, k_cache, v_cache, meta, 0.1)


FALLBACK_SCRIPT = """
import logging, torch
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from server import cpu_attention
from server.attention import paged_attention
from tests.server.test_cpu_attention import CASES, build
query, k_cache, v_cache, meta = build(CASES["mixed-gqa-d32-b16"])
got = cpu_attention.paged_attention_cpu(query, k_cache, v_cache, meta, 0.17, 7)
print("available", cpu_attention.available())
print("equal", torch.equal(got, paged_attention(query, k_cache, v_cache, meta, 0.17, 7)))
"""


def run_fallback(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "RHO_SERVE_CACHE": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=300)


def test_disabled_by_env_takes_the_torch_path_and_says_so_once(tmp_path):
    proc = run_fallback(tmp_path, RHO_SERVE_DISABLE_CPP="1")
    assert proc.returncode == 0, proc.stderr
    assert "available False" in proc.stdout and "equal True" in proc.stdout
    assert proc.stderr.count("disabled by RHO_SERVE_DISABLE_CPP") == 1
    assert not (tmp_path / "ext").exists()  # nothing was built


def test_no_compiler_takes_the_torch_path_and_says_so(tmp_path):
    proc = run_fallback(tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    assert proc.returncode == 0, proc.stderr
    assert "available False" in proc.stdout and "equal True" in proc.stdout
    assert proc.stderr.count("no C++ compiler found") == 1


def test_a_failing_build_takes_the_torch_path_and_says_so(tmp_path):
    proc = run_fallback(tmp_path, CXX="false")  # a "compiler" that exists and fails every command
    assert proc.returncode == 0, proc.stderr
    assert "available False" in proc.stdout and "equal True" in proc.stdout
    assert proc.stderr.count("using the pure-torch paged attention") == 1
