"""HTTP streaming throughput against the engine in-process, on the same model and requests (issue 3's benchmark).

The engine benchmark's ~7M-parameter random Llama; N text prompts, greedy, EOS ignored so both sides produce exactly
the same tokens. (a) in-process: `EngineClient.generate` with `concurrency` requests in flight; (b) HTTP: the same
requests as `/generate_stream` SSE streams from `concurrency` concurrent httpx clients against `rho-serve` started as
its own process on loopback (detokenization, stop matching, JSON, SSE and the network stack all included). Each side
runs `--rounds` times alternately; the best round counts (the machine is shared). Prints one table with the ratio.

    rho-bench http [--requests 64] [--concurrency 32] [--threads 2] [--rounds 2] [--model-id DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.serve_load import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
WORDS = "the of and a to in is you that it he was for on are as with his they at be this have from".split()


def workload(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 200))), rng.randint(64, 192))
            for _ in range(n)]


async def run_in_process(client, tokenizer, requests, concurrency: int) -> tuple[float, int]:
    from server.protocol import EngineRequest, SamplingParams

    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, text: str, n: int) -> int:
        ids = tuple(tokenizer(text)["input_ids"])
        async with gate:
            params = SamplingParams(max_new_tokens=n, ignore_eos=True)
            req = EngineRequest(f"bench-{i}-{time.monotonic_ns()}", ids, params)
            return sum([1 async for _ in client.generate(req)])

    await client.start()
    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i, t, n) for i, (t, n) in enumerate(requests)))
    return time.perf_counter() - start, sum(counts)


async def run_http(url: str, requests, concurrency: int) -> tuple[float, int]:
    import httpx

    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, text: str, n: int) -> int:
        body = {"inputs": text, "parameters": {"max_new_tokens": n, "ignore_eos": True}}
        async with gate, client.stream("POST", "/generate_stream", json=body) as r:
            return sum([1 async for line in r.aiter_lines() if line.startswith("data:")])

    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(client, t, n) for t, n in requests))
    return time.perf_counter() - start, sum(counts)


def measure_in_process(model: Path, requests, args) -> tuple[float, int]:
    import torch

    from server import EngineConfig, load_engine_client

    torch.set_num_threads(args.threads)
    client = load_engine_client(EngineConfig(model_id=str(model), num_threads=args.threads, max_total_tokens=1024))
    # The engine loop on the main thread, as rho-serve runs it (server.engine.Engine.run says why).
    return client.run_beside_engine(
        lambda: asyncio.run(run_in_process(client, client.checkpoint.tokenizer, requests, args.concurrency)))


def measure_http(model: Path, requests, args) -> tuple[float, int]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    argv = [sys.executable, "-m", "router", "--model-id", str(model), "--hostname", "127.0.0.1", "--port", str(port),
            "--num-threads", str(args.threads), "--max-total-tokens", "1024"]
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(argv, port, Path(tmp) / "rho-serve.log", cwd=REPO,
                                                             env=env) as server:
        server.wait_healthy(180)
        asyncio.run(run_http(server.url, requests[:4], 4))  # warm-up
        return asyncio.run(run_http(server.url, requests, args.concurrency))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rho-bench http", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-id", type=Path, default=None, help="checkpoint folder (default: the 7M bench model)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model_id is None:
            from bench.engine_bench import build_model
        model = args.model_id or build_model(Path(tmp))
        requests = workload(args.requests, seed=0)
        best = {"in-process": (float("inf"), 0), "http": (float("inf"), 0)}
        for _ in range(args.rounds):
            for name, fn in (("in-process", measure_in_process), ("http", measure_http)):
                seconds, tokens = fn(model, requests, args)
                if seconds < best[name][0]:
                    best[name] = (seconds, tokens)
    print_table(best, args)


def print_table(best: dict, args) -> None:
    rate = {k: tokens / seconds for k, (seconds, tokens) in best.items()}
    print(f"\n{args.requests} requests, {args.concurrency} in flight, greedy, EOS ignored, {args.threads} threads; "
          f"best of {args.rounds} rounds")
    print(f"| {'path':<34} | {'tokens':>7} | {'seconds':>8} | {'tokens/s':>9} | {'ratio':>6} |")
    print(f"|{'-' * 36}|{'-' * 9}|{'-' * 10}|{'-' * 11}|{'-' * 8}|")
    for name, label in (("in-process", "engine in-process (EngineClient)"), ("http", "HTTP /generate_stream (SSE)")):
        seconds, tokens = best[name]
        print(f"| {label:<34} | {tokens:>7} | {seconds:>8.2f} | {rate[name]:>9.1f} | "
              f"{rate[name] / rate['in-process']:>5.2f}x |")
    print(json.dumps({"http_over_in_process": round(rate["http"] / rate["in-process"], 3)}))


if __name__ == "__main__":
    main()
