"""`slm-train experiment`: the miniature Rho-1 replication (preset `arith`, the default) as a resumable job graph.

Per seed: base -> reference -> score -> arms (CLM, SLM at each ratio, random selection), all arms from that seed's
base. Jobs run in `--workers` single-thread processes (two on the 2-core machine), each logging to its own file
under out_dir/logs/; a finished job leaves result.json and is skipped on a re-run, an interrupted one resumes from
its checkpoint. report.py turns the collected results into the Markdown report and figures.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from slm_train import pipeline
from slm_train.config import SLMError, TrainConfig, opt

# model (hidden, layers, heads), vocabulary, row length, corpus tokens (clean set, base corpus, arms' corpus),
# held-out problems, budgets in processed tokens (base, arm) and reference epochs over the clean set, rows per step,
# peak learning rate, warmup steps, evaluation points per run.
PRESETS = {
    "tiny": dict(model=(32, 2, 2), vocab=1024, seq_len=64, clean=6_000, base_corpus=8_000, noisy=10_000, heldout=16,
                 eval_problems=8, base=2_048, ref_epochs=1, arm=2_048, batch=4, lr=3e-3, warmup=2, points=2),
    # arith's budgets fill ~50 min of 2 single-thread workers at the ~6.7k training tokens/s each that a quiet
    # 2-core machine gives this 1.04M-parameter model: 1.5M tokens per arm (about one epoch of the arms' corpus).
    "arith": dict(model=(128, 4, 4), vocab=1024, seq_len=128, clean=300_000, base_corpus=1_200_000,
                  noisy=1_500_000, heldout=400, eval_problems=300, base=1_200_000, ref_epochs=3, arm=1_500_000,
                  batch=8, lr=3e-3, warmup=20, points=10),
    "gpu": dict(model=(384, 6, 6), vocab=1024, seq_len=512, clean=2_000_000, base_corpus=8_000_000,
                noisy=16_000_000, heldout=1000, eval_problems=1000, base=8_000_000, ref_epochs=3, arm=16_000_000, batch=64, lr=1e-3,
                warmup=100, points=16),
}


@dataclass
class ExperimentConfig:
    """`slm-train experiment`: base, reference, scores, CLM / SLM ratio sweep / random selection, over seeds."""

    preset: str = opt("arith", "size: arith (the miniature, ~1 h on 2 cores with --workers 2), tiny (tests), "
                               "gpu (a CUDA device; not run here)", tuple(PRESETS))
    out_dir: str = opt("runs/experiment", "corpora, checkpoints and logs (re-running skips finished jobs)")
    report_dir: str = opt("reports/slm", "where report.md, results.json and the PNG figures go")
    seeds: int = opt(3, "seeds (each: its own base init, reference and data order)")
    ratios: list = opt(["0.2", "0.4", "0.6", "0.8"], "SLM token selection ratios")
    random_ratio: float = opt(0.6, "ratio of the random-selection ablation")
    workers: int = opt(2, "jobs run at once, each a single-thread process (1: in this process)")
    num_threads: int = opt(1, "torch CPU threads per job")
    scale: float = opt(1.0, "multiplier on every corpus size and token budget (a pilot: < 1)")
    device: str = opt("", "cpu or cuda (empty: cuda when available)")
    notes: str = opt("", "Markdown file appended to the report as its analysis section (written after the runs)")


def arms(cfg: ExperimentConfig) -> list[tuple[str, str, float]]:
    """(name, mode, ratio) of every arm."""
    out = [("clm", "clm", 0.6)]  # a clm run logs the loss on the tokens SLM-60 would select (Fig. 6)
    out += [(f"slm{round(float(r) * 100)}", "slm", float(r)) for r in cfg.ratios]
    return out + [(f"random{round(cfg.random_ratio * 100)}", "random", cfg.random_ratio)]


def sizes(cfg: ExperimentConfig) -> dict:
    p = dict(PRESETS[cfg.preset])
    for k in ("clean", "base_corpus", "noisy", "base", "arm"):
        p[k] = int(p[k] * cfg.scale)
    return p


def corpora(cfg: ExperimentConfig) -> pipeline.Corpora:
    p = sizes(cfg)
    return pipeline.build_corpora(Path(cfg.out_dir), p["seq_len"], p["clean"], p["base_corpus"], p["noisy"],
                                  p["heldout"], p["vocab"])


def common(cfg: ExperimentConfig, max_tokens: int, steps_per_eval_of: int) -> TrainConfig:
    p = sizes(cfg)
    steps = max(1, max_tokens // (p["batch"] * p["seq_len"]))
    return TrainConfig(model=pipeline.model_of(*p["model"]), batch_size=p["batch"], lr=p["lr"], min_lr=p["lr"] / 10,
                       warmup_steps=p["warmup"], num_threads=cfg.num_threads, device=cfg.device,
                       max_tokens=max_tokens, eval_every=max(1, steps // steps_per_eval_of),
                       eval_problems=p["eval_problems"])


def jobs(cfg: ExperimentConfig) -> list[tuple[str, list[str]]]:
    """(job name, names it depends on), in the order they should start: seeds 0 and 1 prepared side by side, then
    seed 0's CLM and SLM-60 (the pilot's arms), then seed 2's stages, then every other arm seed by seed."""
    prep = lambda s: [(f"base/{s}", []), (f"reference/{s}", [f"base/{s}"]), (f"score/{s}", [f"reference/{s}"])]  # noqa: E731
    arm_names = sorted((n for n, _, _ in arms(cfg)), key=lambda n: n not in ("clm", "slm60"))
    first = [j for stage in zip(*(prep(s) for s in range(min(2, cfg.seeds)))) for j in stage]
    rest = []
    pilot = [(f"{n}/0", ["score/0"]) for n in arm_names[:2]]
    for s in range(2, cfg.seeds):
        rest += prep(s)
    arm_jobs = [(f"{n}/{s}", [f"score/{s}"]) for s in range(cfg.seeds) for n in arm_names]
    return first + pilot + rest + [j for j in arm_jobs if j not in pilot]


def run_job(cfg: ExperimentConfig, name: str) -> str:
    """One job of the graph (in a worker process when workers > 1)."""
    p, c = sizes(cfg), corpora(cfg)
    stage, seed = name.split("/")
    seed = int(seed)
    sd = pipeline.seed_dir(Path(cfg.out_dir), seed)
    if stage == "base":
        tc = dataclasses.replace(common(cfg, p["base"], max(2, p["points"] // 2)), data_dir=str(c.base),
                                 eval_data=str(c.heldout), seed=seed, data_seed=seed)
        pipeline.train_stage(sd / "base", tc, c, num_threads=cfg.num_threads)
    elif stage == "reference":
        ref_tokens = p["ref_epochs"] * pipeline.PackedData(c.clean).meta["num_tokens"]
        tc = dataclasses.replace(common(cfg, ref_tokens, max(2, p["points"] // 2)), data_dir=str(c.clean),
                                 eval_data=str(c.heldout), init_from=str(sd / "base" / "ckpt.pt"), seed=seed,
                                 data_seed=seed)
        pipeline.train_stage(sd / "reference", tc, c, num_threads=cfg.num_threads)
    elif stage == "score":
        pipeline.score_stage(sd / "scores", sd / "reference" / "ckpt.pt", c, cfg.num_threads, cfg.device)
    else:
        mode, ratio = next((m, r) for n, m, r in arms(cfg) if n == stage)
        tc = dataclasses.replace(common(cfg, p["arm"], p["points"]), data_dir=str(c.noisy), mode=mode, ratio=ratio,
                                 scores_dir=str(sd / "scores"), eval_data=str(c.heldout),
                                 init_from=str(sd / "base" / "ckpt.pt"), seed=seed, data_seed=seed)
        pipeline.train_stage(sd / stage, tc, c, num_threads=cfg.num_threads)
    return name


def _worker(cfg: ExperimentConfig, name: str) -> str:
    """Worker-process entry: one thread, output to the job's log file."""
    import torch

    torch.set_num_threads(cfg.num_threads)
    os.environ["TQDM_MININTERVAL"] = "15"
    log = Path(cfg.out_dir) / "logs" / f"{name.replace('/', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        return run_job(cfg, name)


def run_all(cfg: ExperimentConfig) -> None:
    graph = jobs(cfg)
    corpora(cfg)  # built once, before the workers need them
    finished: set[str] = set()
    bar = tqdm(total=len(graph), desc="experiment jobs", file=sys.stdout)
    if cfg.workers <= 1:
        for name, _ in graph:
            run_job(cfg, name)
            bar.update(1)
        return
    pending = list(graph)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(cfg.workers, mp_context=ctx) as pool:
        running: dict[cf.Future, str] = {}
        while pending or running:
            for job in [j for j in pending if set(j[1]) <= finished][:cfg.workers - len(running)]:
                pending.remove(job)
                running[pool.submit(_worker, cfg, job[0])] = job[0]
            if not running:
                raise SLMError(f"job graph stuck: {pending}")
            for fut in cf.wait(running, return_when=cf.FIRST_COMPLETED).done:
                name = running.pop(fut)
                fut.result()  # a failed job stops the experiment (re-running resumes)
                finished.add(name)
                bar.update(1)
                bar.set_postfix_str(name)


def run(cfg: ExperimentConfig) -> Path:
    if cfg.seeds < 1:
        raise SLMError("--seeds must be at least 1")
    run_all(cfg)
    from slm_train.report import collect, write_report

    results = collect(cfg)
    if cfg.notes:
        results["notes"] = Path(cfg.notes).read_text()
    return write_report(results, Path(cfg.report_dir))
