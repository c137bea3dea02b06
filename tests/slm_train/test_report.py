"""The experiment's report arithmetic (report.py) on hand-made results, and the whole experiment (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from slm_train.report import tokens_to_reach, write_report


def test_tokens_to_reach_interpolates_and_says_never():
    xs, ys = np.array([0.0, 100.0, 200.0]), np.array([3.0, 2.0, 1.0])
    assert tokens_to_reach(xs, ys, 1.5, lower_is_better=True) == pytest.approx(150.0)
    assert tokens_to_reach(xs, ys, 0.5, lower_is_better=True) is None
    assert tokens_to_reach(xs, np.array([0.0, 0.2, 0.4]), 0.3, lower_is_better=False) == pytest.approx(150.0)


def _run(final_loss: float, acc: float, share_clean: float) -> dict:
    xs = [0, 1000, 2000]
    losses = [4.0, (4.0 + final_loss) / 2, final_loss]
    return {"accuracy_curve": [{"tokens": x, "accuracy": acc * i / 2} for i, x in enumerate(xs)],
            "eval_curve": [{"tokens": x, "eval_loss": v} for x, v in zip(xs, losses)],
            "train_curve": [{"tokens": x, "loss": v, "loss_selected": v - 0.5, "loss_unselected": v + 1,
                             "loss_clean": v - 0.2, "loss_noise": v + 2} for x, v in zip(xs, losses)],
            "selected_share": {"clean": share_clean, "random": 0.1},
            "final": {"eval_loss": final_loss, "accuracy": acc}}


def test_report_compares_slm_with_the_baseline(tmp_path):
    runs = {}
    for seed in range(3):
        runs[f"clm/seed{seed}"] = _run(2.0 + 0.01 * seed, 0.2, 0.8)
        runs[f"slm60/seed{seed}"] = _run(1.5 + 0.01 * seed, 0.4, 0.9)
        runs[f"random60/seed{seed}"] = _run(2.2, 0.1, 0.6)
    results = {"preset": "hand", "preset_values": {"model": (64, 2, 4), "seq_len": 64, "batch": 8, "lr": 1e-3,
                                                   "base": 1, "ref": 1, "arm": 2000, "problems": 10},
               "base": [{"eval_loss": 4.0}], "reference": [{"eval_loss": 1.0}], "base_accuracy": 0.0,
               "reference_accuracy": 0.5, "mean_ref_loss_by_label": {"clean": 1.0, "random": 7.0}, "runs": runs}
    report = write_report(results, tmp_path)
    text = report.read_text()
    assert "| slm60 | 3 | 1.5100 ± 0.0100 | 40.0% ± 0.0 | 90% | 10% |" in text
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    loss = summary["comparison"]["eval_loss"]
    # slm60's curve 4.0 -> 2.755 -> 1.51 reaches clm's final 2.01 at 1000 + (2.01-2.755)/(1.51-2.755)*1000 tokens
    assert loss["slm60_tokens_to_reach_clm_final"] == pytest.approx(1000 + 0.745 / 1.245 * 1000, rel=1e-6)
    assert loss["clm_tokens_to_reach_slm60_final"] is None
    for name in ("fig1_accuracy_vs_tokens.png", "fig9_ratio_sweep.png", "fig6_selected_unselected_loss.png"):
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tmp_path):
    from slm_train.experiment import ExperimentConfig, run

    report = run(ExperimentConfig(preset="tiny", out_dir=str(tmp_path / "runs"), report_dir=str(tmp_path / "r"),
                                  seeds=1, num_threads=1))
    text = report.read_text()
    for arm in ("clm", "slm40", "slm60", "slm80", "random60"):
        assert f"| {arm} | 1 |" in text
