"""`slm-train experiment`: the miniature Rho-1 replication on the built-in corpora.

One token budget for every arm: causal LM (the baseline), SLM at each ratio, random selection, over several seeds
(the seed sets the data order and the random selection; all arms start from the same base, as in the paper).
Held-out clean loss comes from the training log; greedy answer accuracy on held-out word problems is measured
through rho-serve's engine on exported checkpoints along the way. report.py writes the Markdown report and plots.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from slm_train import pipeline
from slm_train.config import ExportConfig, SLMError, TrainConfig, opt
from slm_train.evaluate import accuracy, constant_answer_accuracy
from slm_train.export import export
from slm_train.math_corpus import heldout_problems
from slm_train.train import train

# Sizes: model (hidden, layers, heads), seq_len, clean/noisy corpus tokens, base/reference/arm budgets,
# rows per step, accuracy checkpoints per run, held-out problems.
PRESETS = {
    "tiny": dict(model=(64, 2, 4), seq_len=128, clean=40_000, noisy=60_000, base=16_384, ref=24_576, arm=32_768,
                 batch=8, points=2, problems=16, lr=2e-3, warmup=5),
    "small": dict(model=(96, 4, 4), seq_len=256, clean=60_000, noisy=120_000, base=40_000, ref=60_000,
                  arm=60_000, batch=8, points=2, problems=60, lr=2e-3, warmup=10),
    "default": dict(model=(96, 4, 4), seq_len=256, clean=150_000, noisy=300_000, base=100_000, ref=150_000,
                    arm=150_000, batch=8, points=3, problems=60, lr=2e-3, warmup=20),
    "large": dict(model=(128, 4, 4), seq_len=256, clean=300_000, noisy=1_000_000, base=200_000, ref=400_000,
                  arm=450_000, batch=8, points=5, problems=200, lr=2e-3, warmup=30),
    "gpu": dict(model=(384, 6, 6), seq_len=512, clean=4_000_000, noisy=20_000_000, base=4_000_000, ref=8_000_000,
                arm=16_000_000, batch=64, points=8, problems=500, lr=1e-3, warmup=100),
}


@dataclass
class ExperimentConfig:
    """`slm-train experiment`: reference, CLM baseline, SLM ratio sweep and random selection over seeds."""

    preset: str = opt("default", "size: tiny (tests, ~1-4 min), small (~8 min), default (~20 min measured on the "
                                 "shared 2-core machine), large (~3x default, not run here), gpu (a CUDA device)",
                      tuple(PRESETS))
    out_dir: str = opt("runs/experiment", "corpora, checkpoints and logs (re-running skips finished runs)")
    report_dir: str = opt("reports/slm", "where report.md, results.json and the PNG plots go")
    seeds: int = opt(3, "seeds per arm")
    ratios: list = opt(["0.4", "0.6", "0.8"], "SLM token selection ratios")
    random_ratio: float = opt(0.6, "ratio of the random-selection ablation")
    rank_scope: str = opt("global", "SLM ranking scope under DDP (see train.py)", ("global", "local"))
    max_number: int = opt(20, "largest operand of the generated problems")
    noise_level: float = opt(1.0, "multiplier on the noisy corpus's noise rates")
    num_threads: int = opt(2, "torch CPU threads")
    device: str = opt("", "cpu or cuda (empty: cuda when available)")
    notes: str = opt("", "Markdown file appended to the report as its analysis section (written after the runs)")


def arms(cfg: ExperimentConfig) -> list[tuple[str, str, float]]:
    """(name, mode, ratio) of every arm."""
    out = [("clm", "clm", 1.0)]
    out += [(f"slm{round(float(r) * 100)}", "slm", float(r)) for r in cfg.ratios]
    return out + [(f"random{round(cfg.random_ratio * 100)}", "random", cfg.random_ratio)]


def run(cfg: ExperimentConfig) -> Path:
    if cfg.seeds < 1:
        raise SLMError("--seeds must be at least 1")
    p = PRESETS[cfg.preset]
    root = Path(cfg.out_dir) / cfg.preset
    corpora = pipeline.build_corpora(root, p["seq_len"], p["clean"], p["noisy"], cfg.max_number,
                                     noise_level=cfg.noise_level)
    common = TrainConfig(model=pipeline.model_of(*p["model"]), batch_size=p["batch"], lr=p["lr"],
                         min_lr=p["lr"] / 10, warmup_steps=p["warmup"], num_threads=cfg.num_threads,
                         device=cfg.device, progress=False, eval_data=str(corpora.heldout))
    steps = p["arm"] // (p["batch"] * p["seq_len"])
    common = dataclasses.replace(common, eval_every=max(1, steps // 10))
    base, ref = pipeline.base_and_reference(root, corpora, dataclasses.replace(common, max_tokens=p["base"]),
                                            dataclasses.replace(common, max_tokens=p["ref"]))
    scores = pipeline.score_corpus(root, corpora, ref, cfg.num_threads)
    problems = heldout_problems(p["problems"], cfg.max_number)
    results = {"preset": cfg.preset, "preset_values": p, "config": dataclasses.asdict(cfg), "runs": {},
               "base": _eval_log(root / "base"), "reference": _eval_log(root / "reference"),
               "reference_accuracy": _accuracy(ref, corpora, problems, root / "export", cfg)["accuracy"],
               "base_accuracy": _accuracy(base, corpora, problems, root / "export", cfg)["accuracy"],
               "mean_ref_loss_by_label": json.loads((scores / "meta.json").read_text())["mean_loss_by_label"],
               "constant_answer_accuracy": constant_answer_accuracy(problems)}
    for seed in range(cfg.seeds):
        for name, mode, ratio in arms(cfg):
            arm_cfg = dataclasses.replace(common, data_dir=str(corpora.noisy), scores_dir=str(scores), mode=mode,
                                          ratio=ratio if mode != "clm" else _first_ratio(cfg), seed=seed,
                                          data_seed=seed, init_from=str(base), max_tokens=p["arm"],
                                          rank_scope=cfg.rank_scope, keep_ckpts=True,
                                          ckpt_every=max(1, steps // p["points"]))
            result = _run_arm(root / name / f"seed{seed}", arm_cfg, corpora, problems, cfg)
            result["accuracy_curve"].insert(0, {"tokens": 0, "accuracy": results["base_accuracy"]})
            results["runs"][f"{name}/seed{seed}"] = result
            print(f"experiment: {name} seed {seed} done: {results['runs'][f'{name}/seed{seed}']['final']}")
    from slm_train.report import write_report

    if cfg.notes:
        results["notes"] = Path(cfg.notes).read_text()
    return write_report(results, Path(cfg.report_dir))


def _first_ratio(cfg: ExperimentConfig) -> float:
    return 0.6 if "0.6" in cfg.ratios else float(cfg.ratios[0])


def _run_arm(out: Path, cfg: TrainConfig, corpora, problems, ecfg: ExperimentConfig) -> dict:
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    train(dataclasses.replace(cfg, out_dir=str(out)))
    ckpts = sorted(out.glob("ckpt_*.pt"), key=lambda f: int(f.stem.split("_")[1])) + [out / "ckpt.pt"]
    curve = []
    for ckpt in ckpts:
        acc = _accuracy(ckpt, corpora, problems, out / "export", ecfg)
        tokens = int(ckpt.stem.split("_")[1]) if ckpt.stem != "ckpt" else cfg.max_tokens // (
            cfg.batch_size * _seq_len(corpora)) * cfg.batch_size * _seq_len(corpora)
        curve.append({"tokens": tokens, "accuracy": acc["accuracy"], "distinct_answers": acc["distinct_answers"]})
        if ckpt.stem != "ckpt":
            ckpt.unlink()  # accuracy measured; the intermediate weights are not needed any more
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    result = {"accuracy_curve": curve, "eval_curve": [r for r in log if "eval_loss" in r],
              "train_curve": [{"tokens": r["tokens"], "loss": r["loss"], "loss_selected": r["loss_selected"],
                               "loss_unselected": r["loss_unselected"],
                               "loss_clean": r["loss_by_label"].get("clean", float("nan")),
                               "loss_noise": _noise_loss(r)} for r in log if "loss" in r],
              "selected_share": _mean_share([r for r in log if "selected_share" in r]),
              "final": {"eval_loss": [r for r in log if "eval_loss" in r][-1]["eval_loss"],
                        "accuracy": curve[-1]["accuracy"]}}
    done.write_text(json.dumps(result))
    return result


def _noise_loss(row: dict) -> float:
    """Mean training loss over the noise tokens of a step (every label but clean, weighted by its count)."""
    noise = [k for k in row["loss_by_label"] if k != "clean"]
    total = sum(row["loss_by_label"][k] * row["label_count"][k] for k in noise)
    count = sum(row["label_count"][k] for k in noise)
    return total / count if count else float("nan")


def _seq_len(corpora) -> int:
    return json.loads((corpora.noisy / "meta.json").read_text())["seq_len"]


def _mean_share(rows: list[dict]) -> dict[str, float]:
    names = rows[0]["selected_share"].keys()
    return {n: sum(r["selected_share"].get(n, 0.0) for r in rows) / len(rows) for n in names}


def _eval_log(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "eval_loss" in r]


def _accuracy(ckpt: Path, corpora, problems, export_dir: Path, cfg: ExperimentConfig) -> dict:
    export(ExportConfig(ckpt=str(ckpt), data_dir=str(corpora.noisy), out_dir=str(export_dir)), card_text="eval\n")
    try:
        return accuracy(export_dir, problems, max_new_tokens=72, num_threads=cfg.num_threads)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
