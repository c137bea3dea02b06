"""Collect the experiment's job results into one plain dict, and the statistics the report and the acceptance
criteria are computed from (means, std, SE = std / sqrt(seeds), tokens to reach a target on a curve)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from slm_train import pipeline
from slm_train.arith import floors
from slm_train.heldout import HeldoutSet, read

TRAIN_POINTS = 40  # training-log windows kept per run (means over each window)


def _windows(steps: list[dict]) -> list[dict]:
    """Window means of the per-step training log: tokens, losses, and per-label selection shares and losses."""
    k = max(1, len(steps) // TRAIN_POINTS)
    out = []
    for lo in range(0, len(steps) - k + 1, k):
        w = steps[lo:lo + k]
        row = {"tokens": w[-1]["tokens"]}
        for f in ("loss", "loss_selected", "loss_unselected"):
            row[f] = statistics.fmean(r[f] for r in w if not math.isnan(r[f])) if any(
                not math.isnan(r[f]) for r in w) else float("nan")
        for f in ("selected_share", "loss_by_label"):
            names = {n for r in w for n in r[f]}
            row[f] = {n: statistics.fmean(r[f][n] for r in w if n in r[f]) for n in sorted(names)}
        out.append(row)
    return out


def run_summary(result: dict) -> dict:
    log = result["log"]
    steps = [r for r in log if "loss" in r]
    evals = [r for r in log if "eval_loss" in r]
    names = sorted({n for r in steps for n in r["selected_share"]})
    share = {n: statistics.fmean(r["selected_share"][n] for r in steps if n in r["selected_share"]) for n in names}
    out = {"eval_curve": [{k: r[k] for k in ("tokens", "eval_loss", "tf_accuracy")} for r in evals],
           "train_curve": _windows(steps), "selected_share": share,
           "final": {"eval_loss": evals[-1]["eval_loss"], "tf_accuracy": evals[-1]["tf_accuracy"]}}
    if "greedy" in result:
        g = result["greedy"]
        out["final"].update(accuracy=g["accuracy"], exact_solution=g["exact_solution"],
                            distinct_answers=g["distinct_answers"])
        out["samples"] = g["completions"][:3]
    return out


def collect(cfg) -> dict:
    """Everything the report needs, from the finished jobs under cfg.out_dir."""
    from slm_train.experiment import arms, corpora, sizes

    c = corpora(cfg)
    root = Path(cfg.out_dir)
    problems = read(c.heldout)
    res = {"preset": cfg.preset, "sizes": sizes(cfg), "config": cfg.__dict__, "floors": floors(problems),
           "heldout": {"problems": len(problems), "eval_problems": sizes(cfg)["eval_problems"],
                       "eval_tokens": HeldoutSet(c.heldout, limit=sizes(cfg)["eval_problems"]).num_tokens},
           "corpora": {k: _corpus_meta(getattr(c, k)) for k in ("clean", "base", "noisy")},
           "stages": {}, "scores": {}, "runs": {}}
    base_ckpt = pipeline.seed_dir(root, 0) / "base" / "ckpt.pt"
    if base_ckpt.exists():
        import torch

        res["params"] = sum(v.numel() for v in torch.load(base_ckpt, weights_only=False)["model"].values())
    for s in range(cfg.seeds):
        sd = pipeline.seed_dir(root, s)
        for stage in ("base", "reference"):
            if (r := pipeline.done(sd / stage)) is not None:
                res["stages"][f"{stage}/seed{s}"] = run_summary(r)
        if (sd / "scores" / "meta.json").exists():
            m = json.loads((sd / "scores" / "meta.json").read_text())
            res["scores"][f"seed{s}"] = {k: m[k] for k in ("mean_loss_by_label", "loss_histogram_by_label",
                                                          "histogram_edges")}
        for name, _, _ in arms(cfg):
            if (r := pipeline.done(sd / name)) is not None:
                res["runs"][f"{name}/seed{s}"] = run_summary(r)
    return res


def _corpus_meta(folder: Path) -> dict:
    from slm_train.data import PackedData
    from slm_train.noise import LABELS

    d = PackedData(folder)
    labels = np.asarray(d.labels).ravel()
    return {"tokens": d.meta["num_tokens"], "documents": d.meta["num_documents"], "padding": d.meta["padding"],
            "label_share": {n: float((labels == i).mean()) for i, n in enumerate(LABELS) if (labels == i).any()}}


# ----- statistics -----
def by_arm(runs: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key in sorted(runs, key=lambda k: int(k.split("seed")[1])):
        out.setdefault(key.split("/")[0], []).append(runs[key])
    return out


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) over the values that are not NaN (nan, 0 when there are none)."""
    x = np.asarray(xs, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan"), 0.0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def se(xs: list[float]) -> float:
    return mean_std(xs)[1] / math.sqrt(len(xs))


def curve(runs: list[dict], field: str, key: str = "eval_curve") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, mean and std over seeds of a per-run curve (all seeds share the same x points)."""
    xs = np.array([p["tokens"] for p in runs[0][key]], dtype=float)
    ys = np.array([[p[field] for p in r[key]] for r in runs], dtype=float)
    return xs, ys.mean(0), ys.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(xs))


def tokens_to_reach(xs: np.ndarray, ys: np.ndarray, target: float, lower_is_better: bool = False) -> float | None:
    """First x (linear interpolation) where the curve reaches target; None if it never does."""
    hit = ys <= target if lower_is_better else ys >= target
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0)) if y1 != y0 else float(x1)
