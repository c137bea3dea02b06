"""The experiment end to end at toy size (job graph, 2 worker processes, resumption by result.json), the report
it writes (table, acceptance criteria, figures), and the report arithmetic on hand-made curves."""
from __future__ import annotations

import json

import numpy as np
import pytest

from slm_train.acceptance import criteria, speedups
from slm_train.results import tokens_to_reach


def test_tokens_to_reach_interpolates_and_says_never():
    xs, ys = np.array([0.0, 100.0, 200.0]), np.array([3.0, 2.0, 1.0])
    assert tokens_to_reach(xs, ys, 1.5, lower_is_better=True) == pytest.approx(150.0)
    assert tokens_to_reach(xs, ys, 0.5, lower_is_better=True) is None
    assert tokens_to_reach(xs, np.array([0.0, 0.2, 0.4]), 0.3) == pytest.approx(150.0)


def _run(curve: list[float], acc: float, wrong: float = 0.5, result: float = 0.9) -> dict:
    return {"eval_curve": [{"tokens": 100 * i, "eval_loss": 1.0, "tf_accuracy": v} for i, v in enumerate(curve)],
            "selected_share": {"wrong": wrong, "result": result}, "final": {"accuracy": acc, "eval_loss": 1.0}}


def test_criteria_on_hand_made_results():
    runs = {}
    for s in range(3):
        runs[f"clm/seed{s}"] = _run([0.0, 0.1, 0.15, 0.2, 0.2], 0.20 + 0.01 * s)
        runs[f"slm60/seed{s}"] = _run([0.0, 0.3, 0.4, 0.45, 0.5], 0.50 + 0.01 * s, wrong=0.3, result=0.85)
        runs[f"slm20/seed{s}"] = _run([0.0, 0.1, 0.1, 0.1, 0.1], 0.10)
        runs[f"random60/seed{s}"] = _run([0.0, 0.1, 0.1, 0.1, 0.2], 0.15)
    results = {"runs": runs, "floors": {"most_frequent_answer": 0.04, "last_number_in_question": 0.05},
               "stages": {f"reference/seed{s}": _run([0.0, 0.6], 0.60) for s in range(3)}}
    got = {c["n"]: c["met"] for c in criteria(results)}
    assert got == {1: True, 2: True, 3: True, 4: True, 5: True, 6: True}
    # slm60's mean curve reaches clm's final 0.2 at 100 * 0.2 / 0.3 tokens: a 400 / 66.7 = 6x speed-up
    assert speedups([runs[f"clm/seed{s}"] for s in range(3)],
                    [runs[f"slm60/seed{s}"] for s in range(3)])["speedup"] == pytest.approx(6.0)
    results["stages"] = {f"reference/seed{s}": _run([0.0, 0.25], 0.25) for s in range(3)}
    assert not next(c for c in criteria(results) if c["n"] == 2)["met"]


def test_tiny_experiment_end_to_end_with_two_workers_and_resumption(tmp_path):
    from slm_train.experiment import ExperimentConfig, run

    cfg = ExperimentConfig(preset="tiny", out_dir=str(tmp_path / "runs"), report_dir=str(tmp_path / "r"), seeds=2,
                           workers=2, ratios=["0.6"])
    text = run(cfg).read_text()
    for arm in ("clm", "slm60", "random60", "base", "reference"):
        assert f"| {arm} | 2 |" in text
    for n in range(1, 7):
        assert f"\n{n}. **" in text
    for name in ("fig1_accuracy_vs_tokens.png", "fig9_ratio_sweep.png", "fig6_selected_unselected_loss.png",
                 "fig_selection_share.png", "fig_reference_loss_hist.png"):
        assert (tmp_path / "r" / name).stat().st_size > 10_000
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["heldout"]["problems"] == 16 and len(results["runs"]) == 6
    curve = results["runs"]["slm60/seed1"]["eval_curve"]
    assert len(curve) >= 3 and curve[0]["tokens"] == 0
    # a finished job is not run again: its result.json stays as it was
    marker = tmp_path / "runs" / "seed1" / "slm60" / "result.json"
    before = marker.stat().st_mtime_ns
    run(cfg)
    assert marker.stat().st_mtime_ns == before
