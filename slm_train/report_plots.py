"""The report's figures (PNG): accuracy vs tokens (Fig. 1), ratio sweep (Fig. 9), selected vs unselected loss
(Fig. 6), selection share per label over training, and reference-loss histograms per label."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slm_train.results import by_arm, curve, mean_std

LABEL_COLOURS = {"clean": "tab:green", "result": "tab:blue", "wrong": "tab:red", "duplicate": "tab:olive",
                 "boilerplate": "tab:gray", "offdomain": "tab:purple", "random": "tab:brown", "markup": "tab:pink"}


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = by_arm(results["runs"])
    figs = [_accuracy(plt, arms, results, out), _ratio(plt, arms, out), _selected_loss(plt, arms, out),
            _shares(plt, arms, out), _histograms(plt, results, out)]
    return [f for f in figs if f]


def _save(plt, fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _accuracy(plt, arms: dict, results: dict, out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for arm, runs in arms.items():
        for ax, field in ((axes[0], "tf_accuracy"), (axes[1], "eval_loss")):
            x, m, s = curve(runs, field)
            ax.plot(x / 1e6, m, marker="o", ms=3, label=arm)
            ax.fill_between(x / 1e6, m - s, m + s, alpha=0.15)
    for name, value in results["floors"].items():
        axes[0].axhline(value, ls="--", lw=1, color="k" if name.startswith("most") else "gray",
                        label=f"answer-accuracy floor: {name.replace('_', ' ')}")
    axes[0].set(xlabel="processed tokens (M)", ylabel="held-out exact-solution accuracy (teacher-forced)",
                title="Accuracy vs tokens (Fig. 1 analogue), mean ± std over seeds")
    axes[1].set(xlabel="processed tokens (M)", ylabel="held-out clean loss", title="Held-out clean loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, out, "fig1_accuracy_vs_tokens.png")


def _ratio(plt, arms: dict, out: Path) -> str:
    pts = sorted((int(a[3:]) if a.startswith("slm") else 100, r) for a, r in arms.items()
                 if a.startswith("slm") or a == "clm")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, field, label in ((axes[0], "accuracy", "final greedy accuracy"), (axes[1], "eval_loss",
                                                                               "final held-out clean loss")):
        stats = [mean_std([r["final"][field] for r in runs]) for _, runs in pts]
        ax.errorbar([k for k, _ in pts], [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=4,
                    label="SLM (100 = CLM)")
        for a, runs in arms.items():
            if a.startswith("random"):
                m, s = mean_std([r["final"][field] for r in runs])
                ax.errorbar([int(a[6:])], [m], yerr=[s], marker="x", color="tab:red", capsize=4, label=a)
        ax.set(xlabel="token selection ratio k (%)", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Selection ratio sweep (Fig. 9 analogue), mean ± std over seeds")
    return _save(plt, fig, out, "fig9_ratio_sweep.png")


def _train_curve(runs: list[dict], field: str, label: str | None = None):
    xs = np.array([p["tokens"] for p in runs[0]["train_curve"]], dtype=float)
    get = (lambda p: p[field]) if label is None else (lambda p: p[field].get(label, np.nan))
    ys = np.array([[get(p) for p in r["train_curve"]] for r in runs], dtype=float)
    with np.errstate(all="ignore"):
        counts = (~np.isnan(ys)).sum(0)
        return xs, np.where(counts > 0, np.nansum(ys, 0) / np.maximum(counts, 1), np.nan)


def _selected_loss(plt, arms: dict, out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for arm in ("clm", "slm60", "random60"):
        if arm in arms:
            for ax, field in ((axes[0], "loss_selected"), (axes[1], "loss_unselected")):
                x, m = _train_curve(arms[arm], field)
                ax.plot(x / 1e6, m, label=arm)
    for ax, t in zip(axes, ("selected", "unselected")):
        ax.set(title=f"training loss on {t} tokens", xlabel="processed tokens (M)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 6 analogue (clm: the tokens SLM-60's rule would pick from its own losses)")
    return _save(plt, fig, out, "fig6_selected_unselected_loss.png")


def _shares(plt, arms: dict, out: Path) -> str | None:
    if "slm60" not in arms:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, colour in LABEL_COLOURS.items():
        x, m = _train_curve(arms["slm60"], "selected_share", label)
        if not np.isnan(m).all():
            ax.plot(x / 1e6, m, color=colour, label=label)
    ax.set(xlabel="processed tokens (M)", ylabel="share of the label's tokens selected", ylim=(0, 1.02),
           title="SLM-60: selection share per label over training (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(plt, fig, out, "fig_selection_share.png")


def _histograms(plt, results: dict, out: Path) -> str | None:
    scores = results["scores"]
    if not scores:
        return None
    edges = np.array(next(iter(scores.values()))["histogram_edges"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, colour in LABEL_COLOURS.items():
        counts = sum(np.array(s["loss_histogram_by_label"][label]) for s in scores.values()
                     if label in s["loss_histogram_by_label"])
        if isinstance(counts, np.ndarray) and counts.sum():
            ax.step(edges[:-1], counts / counts.sum(), where="post", color=colour, label=label)
    ax.set(xlabel="reference loss (nats; last bin: >= 12)", ylabel="share of the label's tokens", yscale="log",
           title="Reference-model loss per label on the arms' corpus (all seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(plt, fig, out, "fig_reference_loss_hist.png")
