"""The experiment's Markdown report and its PNG plots in the paper's style (Fig. 1, Fig. 9, Fig. 6).

Inputs are the plain results dict experiment.py builds; every number in the report is computed here from it.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from slm_train.train import EVAL_ROWS


def _by_arm(results: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, r in results["runs"].items():
        out.setdefault(key.split("/")[0], []).append(r)
    return out


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _curve(runs: list[dict], key: str, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds of a per-run curve (all seeds share the same x points)."""
    xs = np.array([p["tokens"] for p in runs[0][key]], dtype=float)
    ys = np.array([[p[field] for p in r[key]] for r in runs], dtype=float)
    return xs, ys.mean(0), ys.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(xs))


def tokens_to_reach(xs: np.ndarray, ys: np.ndarray, target: float, lower_is_better: bool) -> float | None:
    """First x (linear interpolation) where the curve reaches target; None if it never does."""
    hit = ys <= target if lower_is_better else ys >= target
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0)) if y1 != y0 else float(x1)


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = _by_arm(results)
    names = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, runs in arms.items():
        for ax, key, field in ((axes[0], "accuracy_curve", "accuracy"), (axes[1], "eval_curve", "eval_loss")):
            x, m, s = _curve(runs, key, field)
            ax.plot(x / 1e6, m, marker="o", ms=3, label=arm)
            ax.fill_between(x / 1e6, m - s, m + s, alpha=0.15)
    axes[0].set(xlabel="processed tokens (M)", ylabel="held-out accuracy (greedy)", title="Accuracy vs tokens (Fig. 1)")
    axes[1].set(xlabel="processed tokens (M)", ylabel="held-out clean loss", title="Held-out clean loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig1_accuracy_vs_tokens.png", dpi=110)
    names.append("fig1_accuracy_vs_tokens.png")
    plt.close(fig)
    names.append(_ratio_plot(plt, arms, out))
    names.append(_loss_plot(plt, arms, out))
    return names


def _ratio_plot(plt, arms: dict, out: Path) -> str:
    points = sorted((int(a[3:]) if a.startswith("slm") else 100, runs) for a, runs in arms.items()
                    if a.startswith("slm") or a == "clm")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, field, label in ((axes[0], "accuracy", "final accuracy"), (axes[1], "eval_loss", "final held-out loss")):
        stats = [_mean_std([r["final"][field] for r in runs]) for _, runs in points]
        ax.errorbar([k for k, _ in points], [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=4)
        ax.set(xlabel="token selection ratio k (%) (100 = causal LM)", ylabel=label)
        ax.grid(alpha=0.3)
    fig.suptitle("Selection ratio sweep (Fig. 9)")
    fig.tight_layout()
    fig.savefig(out / "fig9_ratio_sweep.png", dpi=110)
    plt.close(fig)
    return "fig9_ratio_sweep.png"


def _loss_plot(plt, arms: dict, out: Path) -> str:
    """Top: loss on the tokens each run's own rule selects / leaves. Bottom: loss on clean and on noise tokens."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
    panels = ((axes[0, 0], "loss_selected", "selected tokens"), (axes[0, 1], "loss_unselected", "unselected tokens"),
              (axes[1, 0], "loss_clean", "clean tokens (labels)"), (axes[1, 1], "loss_noise", "noise tokens (labels)"))
    for arm in ("clm", "slm60", "random60"):
        if arm not in arms:
            continue
        for ax, field, _ in panels:
            x, m, _ = _curve(arms[arm], "train_curve", field)
            k = max(1, len(m) // 20)  # smoothed like the paper's curves
            ax.plot(x[k - 1:] / 1e6, np.convolve(m, np.ones(k) / k, mode="valid"), label=arm)
    for ax, _, title in panels:
        ax.set(title=f"training loss on {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set(xlabel="processed tokens (M)")
    fig.suptitle("Fig. 6 analogue (clm's 'selected' = the tokens SLM-60's rule would pick from clm's own losses)")
    fig.tight_layout()
    fig.savefig(out / "fig6_selected_unselected_loss.png", dpi=110)
    plt.close(fig)
    return "fig6_selected_unselected_loss.png"


def summary(results: dict) -> dict:
    """Per-arm final figures and the CLM-vs-SLM-60 comparison at equal tokens."""
    arms = _by_arm(results)
    table = {}
    for arm, runs in arms.items():
        table[arm] = {"seeds": len(runs), "eval_loss": _mean_std([r["final"]["eval_loss"] for r in runs]),
                      "accuracy": _mean_std([r["final"]["accuracy"] for r in runs]),
                      "selected_share": {k: statistics.fmean(r["selected_share"][k] for r in runs)
                                         for k in runs[0]["selected_share"]}}
    out = {"arms": table}
    if "clm" in arms and "slm60" in arms:
        out["comparison"] = _comparison(arms["clm"], arms["slm60"])
    return out


def _comparison(clm: list[dict], slm: list[dict]) -> dict:
    res = {}
    for key, field, lower in (("eval_curve", "eval_loss", True), ("accuracy_curve", "accuracy", False)):
        cx, cm, _ = _curve(clm, key, field)
        sx, sm, _ = _curve(slm, key, field)
        budget = float(cx[-1])
        clm_needs = tokens_to_reach(cx, cm, sm[-1], lower)  # tokens CLM needs to reach SLM's final value
        slm_needs = tokens_to_reach(sx, sm, cm[-1], lower)  # tokens SLM needs to reach CLM's final value
        if cm[-1] == cm[0] or sm[-1] == cm[-1]:  # no progress or a tie: "tokens to reach" means nothing
            clm_needs = slm_needs = None
        res[field] = {"clm_final": float(cm[-1]), "slm60_final": float(sm[-1]), "budget": budget,
                      "clm_tokens_to_reach_slm60_final": clm_needs, "slm60_tokens_to_reach_clm_final": slm_needs,
                      "speedup": budget / slm_needs if slm_needs else None}
    return res


def write_report(results: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    figs = plots(results, out)
    s = summary(results)
    (out / "results.json").write_text(json.dumps({"summary": s, **{k: v for k, v in results.items()
                                                                     if k not in ("runs", "notes")}}, indent=1))
    (out / "report.md").write_text(markdown(results, s, figs))
    return out / "report.md"


def _fmt(ms: tuple[float, float], pct: bool = False) -> str:
    m, sd = ms
    return f"{100 * m:.1f}% ± {100 * sd:.1f}" if pct else f"{m:.4f} ± {sd:.4f}"


def markdown(results: dict, s: dict, figs: list[str]) -> str:
    p = results["preset_values"]
    lines = [f"# Miniature Rho-1 replication (preset `{results['preset']}`)", "",
             "Generated by `slm-train experiment`; every figure below is computed from the runs it made.", "",
             "## Setup", "",
             f"- Llama {p['model'][0]} hidden x {p['model'][1]} layers, rows of {p['seq_len']} tokens, "
             f"{p['batch']} rows per step, AdamW lr {p['lr']} cosine.",
             f"- Base: causal LM on the noisy corpus for {p['base']:,} tokens; reference = base + {p['ref']:,} tokens "
             f"of clean text; every arm continues from the base for {p['arm']:,} processed tokens.",
             f"- Held-out clean loss on {EVAL_ROWS * p['seq_len']:,} clean tokens; greedy accuracy on {p['problems']} held-out "
             "word problems (0-shot, `Question: ...\\nAnswer:`), generated through rho-serve's engine.",
             f"- Held-out loss: base {results['base'][-1]['eval_loss']:.4f}, reference "
             f"{results['reference'][-1]['eval_loss']:.4f}; accuracy: base {results['base_accuracy']:.1%}, "
             f"reference {results['reference_accuracy']:.1%}. Always answering the most frequent held-out answer "
             f"scores {results.get('constant_answer_accuracy', float('nan')):.1%}: accuracy at or below that is "
             "the floor, not skill.",
             "- Mean reference loss per token type: " + ", ".join(
                 f"{k} {v:.2f}" for k, v in results["mean_ref_loss_by_label"].items()), "",
             "## Results (mean ± std over seeds, at equal processed tokens)", "",
             "| arm | seeds | held-out clean loss | accuracy | selected: " + " | ".join(
                 next(iter(s["arms"].values()))["selected_share"]) + " |",
             "|---|---|---|---|" + "---|" * len(next(iter(s["arms"].values()))["selected_share"])]
    for arm, a in s["arms"].items():
        shares = " | ".join(f"{100 * v:.0f}%" for v in a["selected_share"].values())
        lines.append(f"| {arm} | {a['seeds']} | {_fmt(a['eval_loss'])} | {_fmt(a['accuracy'], True)} | {shares} |")
    lines += ["", "(For clm the 'selected' shares are those SLM-60's rule would pick; clm trains on all tokens.)", ""]
    lines += _comparison_text(s.get("comparison"), results.get("constant_answer_accuracy", 0.0))
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figs]
    if results.get("notes"):
        lines += ["", results["notes"].strip()]
    return "\n".join(lines) + "\n"


def _comparison_text(c: dict | None, floor: float) -> list[str]:
    if not c:
        return []
    out = ["## SLM-60 vs the causal-LM baseline", ""]
    for field, label in (("eval_loss", "held-out clean loss"), ("accuracy", "accuracy")):
        r = c[field]
        reach = r["clm_tokens_to_reach_slm60_final"]
        need = r["slm60_tokens_to_reach_clm_final"]
        out.append(f"- {label}: clm {r['clm_final']:.4f}, slm60 {r['slm60_final']:.4f} after {r['budget']:,.0f} "
                   f"tokens. The baseline reaches SLM-60's final value "
                   + (f"after {reach:,.0f} tokens" if reach else "not within the budget (or tie)")
                   + "; SLM-60 reaches the baseline's final value "
                   + (f"after {need:,.0f} tokens ({r['speedup']:.2f}x fewer)" if need
                      else "not within the budget (or tie)")
                   + ("." if field != "accuracy" or max(r["clm_final"], r["slm60_final"]) > floor else
                      f". **Both are at or below the constant-answer floor ({floor:.1%}): not a result.**"))
    return out
