"""Engine throughput against transformers, in one run (issue 2's benchmark).

A ~7M-parameter random Llama; 64 requests (prompt lengths 16-512, outputs 32-256 tokens, fixed seed), greedy, EOS
ignored so every system produces exactly the same number of tokens. Compared:
  (a) transformers `generate`, one request at a time;
  (b) transformers `generate`, padded static batches of 32 (left padding; only requested tokens count);
  (c) the engine, 32 requests in flight (continuous batching: a finished request is replaced at once).
And the engine's mean step time against the model forward alone within those steps (the engine's overhead).

    rho-bench engine [--requests 64] [--concurrency 32] [--threads 2]
    rho-bench engine --fast-ab 3 [--model-id DIR]   # the engine alone, CPU fast path off/on interleaved (cpu_ops)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_model(out: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks run from a checkout: reuse tests/
    from tests.tiny_checkpoint import build_checkpoint, train_tokenizer

    tok = out / "tokenizer"
    train_tokenizer(tok)
    # 7.3M parameters: vocab 8000 (random ids), hidden 256, 4 layers, 8 heads, MLP 688.
    return build_checkpoint(out / "model", tok, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=8,
                            intermediate_size=688, vocab_size=8000, initializer_range=0.02)


def workload(n: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([1] + [rng.randrange(3, 8000) for _ in range(rng.randint(16, 512) - 1)], rng.randint(32, 256))
            for _ in range(n)]


def time_forward(engine) -> list[float]:
    """Wrap the engine's model forward so that its seconds add up in the returned one-element list."""
    total = [0.0]
    original = engine.runner.forward

    def timed(inputs):
        t = time.perf_counter()
        out = original(inputs)
        total[0] += time.perf_counter() - t
        return out

    engine.runner.forward = timed
    return total


def run_engine(model_dir: Path, work, concurrency: int) -> dict:
    from server.config import EngineConfig
    from server.engine import Engine
    from server.protocol import EngineRequest, SamplingParams

    # The engine sets torch's thread count itself: give it the one main() set.
    engine = Engine(EngineConfig(model_id=str(model_dir), max_batch_prefill_tokens=2048,
                                 num_threads=torch.get_num_threads()))
    forward_time = time_forward(engine)
    split = {"prefill": [0, 0.0], "decode": [0, 0.0]}  # method -> [steps, seconds]

    def observe(step) -> None:
        split[step.method][0] += 1
        split[step.method][1] += step.total_s

    engine.add_step_observer(observe)
    queue = [EngineRequest(f"r{i}", tuple(p), SamplingParams(max_new_tokens=m, ignore_eos=True))
             for i, (p, m) in enumerate(work)]
    in_flight, done, tokens = 0, 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while done < len(queue):
        while in_flight < concurrency and done + in_flight < len(queue):
            engine.submit(queue[done + in_flight])
            in_flight += 1
        for event in engine.step():
            tokens += 1
            if event.finish_reason is not None:
                in_flight -= 1
                done += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    steps = engine.stats().num_steps
    return {"tokens": tokens, "seconds": elapsed, "cpu_s": cpu, "steps": steps, "prompt_tokens": sum(len(p) for p, _ in work),
            "step_ms": 1000 * elapsed / steps, "forward_ms": 1000 * forward_time[0] / steps,
            "prefill_steps": split["prefill"][0], "prefill_s": split["prefill"][1],
            "decode_steps": split["decode"][0], "decode_s": split["decode"][1]}


@torch.inference_mode()
def run_hf(model_dir: Path, work, batch_size: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(work), batch_size):
        batch = work[i:i + batch_size]
        width = max(len(p) for p, _ in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, (p, _) in enumerate(batch):  # left padding
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        max_new = max(m for _, m in batch)
        model.generate(ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                       pad_token_id=0)
        tokens += sum(m for _, m in batch)
    return {"tokens": tokens, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sequential", action="store_true", help="skip (a), the slowest part")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--fast-ab", type=int, metavar="ROUNDS", default=0,
                        help="only the engine, ROUNDS x (fast path off, on) interleaved; prints their ratio")
    parser.add_argument("--model-id", type=Path, help="with --fast-ab: this checkpoint instead of the random Llama")
    parser.add_argument("--ab-env", default="RHO_SERVE_DISABLE_FAST",
                        help="with --fast-ab: the variable that turns the compared thing off (e.g. "
                             "RHO_SERVE_DISABLE_ONEDNN: oneDNN packed linears vs column-major weights)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = workload(args.requests, args.seed)
    if args.fast_ab:
        return fast_ab(args, work)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp))
        results = {"engine": run_engine(model_dir, work, args.concurrency),
                   "hf_static_batch": run_hf(model_dir, work, args.concurrency)}
        if not args.skip_sequential:
            results["hf_sequential"] = run_hf(model_dir, work, 1)
    engine = results["engine"]
    rate = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    print(f"\n{args.requests} requests, {args.concurrency} concurrent, {engine['tokens']} generated tokens, "
          f"{args.threads} threads")
    print(f"{'system':<34}{'tokens/s':>10}{'engine is':>12}")
    for name, label in [("hf_sequential", "transformers, one at a time"),
                        ("hf_static_batch", f"transformers, static batches of {args.concurrency}"),
                        ("engine", "rho-serve engine")]:
        if name in rate:
            print(f"{label:<34}{rate[name]:>10.1f}{rate['engine'] / rate[name]:>11.2f}x")
    print(f"engine step {engine['step_ms']:.2f} ms vs model forward {engine['forward_ms']:.2f} ms: "
          f"overhead {engine['step_ms'] / engine['forward_ms']:.2f}x over {engine['steps']} steps")
    print(f"engine time: {engine['prefill_steps']} steps with prompt chunks ({engine['prompt_tokens']} prompt tokens) "
          f"{engine['prefill_s']:.2f} s, {engine['decode_steps']} decode-only steps {engine['decode_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def fast_ab(args, work) -> None:
    """The engine with server/cpu_ops.py's fast path (or, with --ab-env, what that variable turns off) off then on,
    `args.fast_ab` rounds interleaved (the machine is shared: adjacent runs see the same load); tokens/s per run and
    the on/off ratio of each round."""
    DISABLE_ENV = args.ab_env  # noqa: N806 (the variable's name, as server.cpu_ops spells it)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_id or build_model(Path(tmp))
        if args.model_id:  # the workload's ids must fit the checkpoint's vocabulary
            vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
            work = [([t % vocab for t in p], m) for p, m in work]
        ratios, cpu_ratios = [], []  # wall tok/s on/off; CPU seconds off/on (less disturbed by other load)
        for r in range(args.fast_ab):
            rates, cpu = {}, {}
            for label, off in (("off", "1"), ("on", "")):
                os.environ[DISABLE_ENV] = off
                e = run_engine(model_dir, work, args.concurrency)
                rates[label], cpu[label] = e["tokens"] / e["seconds"], e["cpu_s"]
                print(f"round {r} {DISABLE_ENV} {'unset' if label == 'on' else '=1':>5}: {rates[label]:8.1f} tok/s, {e['cpu_s']:.2f} CPU-s, "
                      f"step {e['step_ms']:.2f} ms, forward {e['forward_ms']:.2f} ms, "
                      f"decode-only steps {e['decode_s']:.2f} s", flush=True)
            ratios.append(rates["on"] / rates["off"])
            cpu_ratios.append(cpu["off"] / cpu["on"])
        os.environ.pop(DISABLE_ENV, None)
    print(f"on/off ({DISABLE_ENV} unset / =1), {args.threads} threads: " + ", ".join(f"{x:.2f}x" for x in ratios)
          + f" (median {sorted(ratios)[len(ratios) // 2]:.2f}x); process CPU-s off/on: "
          + ", ".join(f"{x:.2f}x" for x in cpu_ratios) + f" (median {sorted(cpu_ratios)[len(cpu_ratios) // 2]:.2f}x)")


if __name__ == "__main__":
    main()
