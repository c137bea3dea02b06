"""Where a steady decode step's time goes: torch.profiler over the engine's decode steps at N concurrent.

Builds the engine on a checkpoint (the bundled model, or a random Llama like bench/engine_bench.py's), fills it with
N requests until every sequence decodes, then profiles steps: prints the step wall time, the model forward's share,
and the top ops by self CPU time (kernels vs the Python between them).

    python -m bench.step_profile [--model models/rho-math-tiny | --random] [--concurrency 32] [--steps 40]
                                 [--prompt-len 64] [--prefill | --thread-ab]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch


def _fill(engine, n: int, prompt_len: int, vocab: int):
    from server.protocol import EngineRequest, SamplingParams

    rng = random.Random(0)
    for i in range(n):
        prompt = (1,) + tuple(rng.randrange(3, vocab) for _ in range(prompt_len - 1))
        engine.submit(EngineRequest(f"r{i}", prompt, SamplingParams(max_new_tokens=4000, ignore_eos=True)))
    while engine.scheduler.num_waiting or engine.stats().num_steps < 4:
        engine.step()
    for _ in range(10):
        engine.step()


def profile(model_dir: str, n: int, steps: int, prompt_len: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from server.config import EngineConfig
    from server.engine import Engine

    engine = Engine(EngineConfig(model_id=model_dir, num_threads=torch.get_num_threads()))  # it sets torch's count
    _fill(engine, n, prompt_len, engine.checkpoint.vocab_size)
    from bench.engine_bench import time_forward

    forward = time_forward(engine)
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    wall = (time.perf_counter() - t) / steps
    print(f"{model_dir}: {n} concurrent, {torch.get_num_threads()} threads: step {1000 * wall:.2f} ms, "
          f"model forward {1000 * forward[0] / steps:.2f} ms, rest of the step {1000 * (wall - forward[0] / steps):.2f} ms")
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"profiled self CPU time per step {total / steps / 1000:.2f} ms (profiler overhead included)")
    print(f"{'op':<44}{'calls/step':>11}{'self ms/step':>13}{'share':>8}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        print(f"{e.key[:43]:<44}{e.count / steps:>11.1f}{e.self_cpu_time_total / steps / 1000:>13.3f}"
              f"{100 * e.self_cpu_time_total / total:>7.1f}%")


def prefill_waves(model_dir: str, n: int, prompt_len: int, waves: int = 3) -> None:
    """Time whole prefill waves: n prompts of prompt_len tokens (1 new token each, prefix cache off) until done."""
    from server.config import EngineConfig
    from server.engine import Engine
    from server.protocol import EngineRequest, SamplingParams

    engine = Engine(EngineConfig(model_id=model_dir, num_threads=torch.get_num_threads(), enable_prefix_caching=False))
    rng, vocab = random.Random(0), engine.checkpoint.vocab_size
    times = []
    for wave in range(waves + 1):  # the first wave warms up
        for i in range(n):
            prompt = (1,) + tuple(rng.randrange(3, vocab) for _ in range(prompt_len - 1))
            engine.submit(EngineRequest(f"w{wave}-{i}", prompt, SamplingParams(max_new_tokens=1, ignore_eos=True)))
        t = time.perf_counter()
        engine.step()
        while engine.scheduler.has_work():
            engine.step()
        times.append(time.perf_counter() - t)
    print(f"{model_dir}: prefill of {n} prompts x {prompt_len} tokens: " +
          ", ".join(f"{1000 * x:.0f}" for x in times[1:]) + " ms per wave")


def thread_ab(model_dir: str, n: int, prompt_len: int, steps: int) -> None:
    """Decode steps run on the main thread, then (a fresh engine, same requests) on a thread of their own."""
    import threading

    from server.config import EngineConfig
    from server.engine import Engine

    def run(where: str) -> None:
        engine = Engine(EngineConfig(model_id=model_dir, num_threads=torch.get_num_threads()))
        _fill(engine, n, prompt_len, engine.checkpoint.vocab_size)
        t = time.perf_counter()
        for _ in range(steps):
            engine.step()
        print(f"{model_dir}: {n} concurrent, steps on {where}: {1000 * (time.perf_counter() - t) / steps:.2f} ms")

    for _ in range(2):
        run("the main thread")
        worker = threading.Thread(target=run, args=("a thread of their own",))
        worker.start()
        worker.join()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/rho-math-tiny")
    p.add_argument("--random", action="store_true", help="a random 7.5M Llama (hidden 256, 4 layers, vocab 8000)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--prefill", action="store_true",
                   help="instead: time prefill waves of --concurrency prompts of --prompt-len tokens")
    p.add_argument("--thread-ab", action="store_true",
                   help="instead: decode steps on the main thread vs on a thread of their own (libgomp's throttling)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        from bench.engine_bench import build_model

        model = str(build_model(Path(tmp))) if a.random else a.model
        if a.prefill:
            return prefill_waves(model, a.concurrency, a.prompt_len)
        if a.thread_ab:
            return thread_ab(model, a.concurrency, a.prompt_len, a.steps)
        profile(model, a.concurrency, a.steps, a.prompt_len, a.top)


if __name__ == "__main__":
    main()
