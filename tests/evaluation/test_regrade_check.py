"""`rho-eval regrade --check` exit status: score or prediction flips fail the check; a timeout count that differs
from the stored metrics (the grading machine's speed) is reported but changes no score, so it does not fail it."""
from __future__ import annotations

import pytest

from evaluation import cli, regrade
from evaluation.regrade import OutputFile, RegradeResult

FILE = OutputFile("gsm8k/test_cot_-1_seed0_t0.0_s0_e-1.jsonl", "gsm8k", "cot", [], {"timeout_samples": 0})


def run_check(monkeypatch, result: RegradeResult) -> int:
    monkeypatch.setattr(regrade, "read_outputs", lambda path: [FILE])
    monkeypatch.setattr(regrade, "regrade_file", lambda *args: result)
    monkeypatch.setattr(regrade, "format_regrade", lambda results: "table")
    monkeypatch.setattr(cli, "_exact_latex_available", lambda: True)
    monkeypatch.setattr(cli, "_require_sandbox", lambda unsafe: None)
    return cli.main(["regrade", "outputs.zip", "--check"])


@pytest.mark.parametrize("pred_flips, score_flips, timeouts, code", [
    ([], [], 0, 0), ([], [], 1, 0), ([], [7], 1, 1), ([3], [], 0, 1)])
def test_only_flips_fail_the_check(monkeypatch, capsys, pred_flips, score_flips, timeouts, code):
    result = RegradeResult(FILE, {"timeout_samples": timeouts, "acc": 0.0}, pred_flips, score_flips)
    assert run_check(monkeypatch, result) == code
    if timeouts:
        assert "timeout counts differ" in capsys.readouterr().err
