"""Paged attention on CPU: the C++ operator that reads the cache in place (server/cpu_attention.py) against the
pure-torch path (server/attention.py, index_select gather + SDPA), per call of one layer, in one run.

Decode rows (one new token per sequence) at a given batch and context, block size 16, shuffled block tables, for the
random-Llama shapes of issue 13: 7.5M (8 heads, head_dim 32, MHA) and 33M (8 heads over 4 KV heads, head_dim 64);
and one prefill case (a chunk of new tokens over a cached prefix). Best of `--repeats` timed calls after warm-up (the machine is shared: the minimum is the least disturbed).

Then the operator's memory rate on a served decode step: the bundled model's shape (4 heads x 32, 4 layers) at
`--batch` sequences over `--step-context` tokens, each layer's cache its own (as served, the step's K/V exceed the
L3 cache and come from DRAM), against the same step with every block table pointing at 16 blocks (cache-resident:
the operator's compute alone). The bytes read over the time give GB/s, to set beside the machine's DRAM rate.

    rho-bench attention [--batch 32] [--contexts 64,128,256,512] [--step-context 180] [--threads 2] [--repeats 50]
"""
from __future__ import annotations

import argparse
import random
import time

import torch

SHAPES = {"7.5M": (8, 8, 32), "33M": (8, 4, 64)}  # (num_heads, num_kv_heads, head_dim)
BLOCK_SIZE = 16


def make_case(batch: int, cached: int, new: int, heads: int, kv_heads: int, head_dim: int, seed: int = 0):
    """query (batch * new, heads, head_dim), a shuffled paged cache with `cached + new` tokens per sequence, meta."""
    from server.attention import AttentionMetadata

    rng = random.Random(seed)
    per_seq = -(-(cached + new) // BLOCK_SIZE)
    pool = list(range(batch * per_seq))
    rng.shuffle(pool)
    tables = [pool[i * per_seq:(i + 1) * per_seq] for i in range(batch)]
    lens = [cached + new] * batch
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(batch * new, dtype=torch.int64),
        query_start_loc=torch.arange(0, batch * new + 1, new, dtype=torch.int32),
        seq_lens=torch.tensor(lens, dtype=torch.int32), block_tables=torch.tensor(tables, dtype=torch.int32),
        max_query_len=new, max_seq_len=cached + new, query_lens=[new] * batch, seq_lens_list=lens).prepare()
    shape = (batch * per_seq, BLOCK_SIZE, kv_heads, head_dim)
    return torch.randn(batch * new, heads, head_dim), torch.randn(shape), torch.randn(shape), meta


def served_step(batch: int, context: int, repeats: int, layers: int = 4, heads: int = 4, head_dim: int = 32,
                resident: bool = False) -> tuple[float, float]:
    """(seconds, MB of K/V read) for one decode step's attention over `layers` caches; resident: every table points
    at the same 16 blocks, so the reads hit the cache."""
    from server import cpu_attention

    steps = []
    for layer in range(layers):
        q, k, v, meta = make_case(batch, context - 1, 1, heads, heads, head_dim, seed=layer)
        if resident:
            meta.block_tables %= 16
        steps.append((q, k, v, meta, head_dim ** -0.5, None))

    def step():
        for call in steps:
            cpu_attention.paged_attention_cpu(*call)

    return time_call(step, (), repeats), batch * context * heads * head_dim * 4 * 2 * layers / 1e6


def time_call(fn, args, repeats: int) -> float:
    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--contexts", default="64,128,256,512", help="cached tokens per sequence, comma-separated")
    parser.add_argument("--step-context", type=int, default=180, help="context per sequence of the served step")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from server import cpu_attention
    from server.attention import paged_attention

    if not cpu_attention.available():
        raise SystemExit("the C++ operator is not available here (see the log): nothing to compare")
    print(f"\npaged attention per call (one layer), block size {BLOCK_SIZE}, {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"{'shape':<6}{'kind':<22}{'torch us':>10}{'C++ us':>10}{'speed-up':>10}")
    cases = [("decode", args.batch, int(c), 1) for c in args.contexts.split(",")]
    cases.append(("prefill 64 over 256", 4, 256, 64))
    with torch.inference_mode():
        for name, (heads, kv_heads, head_dim) in SHAPES.items():
            for kind, batch, cached, new in cases:
                q, k, v, meta = make_case(batch, cached, new, heads, kv_heads, head_dim)
                call = (q, k, v, meta, head_dim ** -0.5, None)
                t_torch = time_call(paged_attention, call, args.repeats)
                t_cpp = time_call(cpu_attention.paged_attention_cpu, call, args.repeats)
                label = f"{kind} x{batch} ctx {cached + new}" if kind == "decode" else f"{kind} x{batch}"
                print(f"{name:<6}{label:<22}{1e6 * t_torch:>10.1f}{1e6 * t_cpp:>10.1f}{t_torch / t_cpp:>9.2f}x")
        print(f"\nserved decode step (bundled shape, 4 layers, x{args.batch} ctx {args.step_context}), C++ operator:")
        for resident in (False, True):
            seconds, mb = served_step(args.batch, args.step_context, args.repeats, resident=resident)
            where = "blocks in cache (compute)" if resident else "own caches (from DRAM)"
            print(f"  {where:<27}{1e3 * seconds:>7.3f} ms for {mb:.1f} MB: {mb / 1e3 / seconds:>5.1f} GB/s")


if __name__ == "__main__":
    main()
