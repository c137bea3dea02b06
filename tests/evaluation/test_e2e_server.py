"""End to end against a live rho-serve on loopback (real engine, tiny random Llama, real router, Bearer auth).

cot: the first 50 GSM8K problems (greedy, harness stops, 16 new tokens to stay fast). tora: 10 problems, with a
TGI regex grammar passed through --extra-params so the random model writes a program each round: the executor
runs for every round and the 4-round limit is reached, as the harness would do with such a model.
"""
import json

from evaluation.cli import main

from .conftest import API_KEY

PROGRAM_GRAMMAR = {"grammar": {"type": "regex", "value": "```python\nprint\\(6 \\* 7\\)\n```"}}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cot_first_50_gsm8k(rho_serve, harness_dir, tmp_path):
    argv = ["run", "--endpoint", rho_serve.url, "--api-key", API_KEY, "--harness-dir", str(harness_dir),
            "--data", "gsm8k", "--prompt-type", "cot", "--end", "50", "--max-tokens", "16",
            "--output-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "gsm8k" / "test_cot_-1_seed0_t0.0_s0_e50.jsonl"
    rows = _rows(out)
    assert [r["idx"] for r in rows] == list(range(50))
    assert all(set(r) >= {"idx", "question", "gt_cot", "gt", "code", "pred", "report", "score"} for r in rows)
    assert all(len(r["code"]) == 1 and "\n\nQuestion:" not in r["code"][0] for r in rows)
    metrics = json.loads((tmp_path / "gsm8k" / "test_cot_-1_seed0_t0.0_s0_e50_cot_metrics.json").read_text())
    assert metrics["num_samples"] == 50 and 0.0 <= metrics["acc"] <= 100.0
    # Greedy and resumable: a second run finds everything done and asks the server nothing new.
    assert main(argv) == 0
    assert _rows(out) == rows


def test_tora_10_problems_run_the_executor(rho_serve, harness_dir, tmp_path):
    argv = ["run", "--endpoint", rho_serve.url, "--api-key", API_KEY, "--harness-dir", str(harness_dir),
            "--data", "gsm8k", "--prompt-type", "tora", "--end", "10", "--max-tokens", "32",
            "--extra-params", json.dumps(PROGRAM_GRAMMAR), "--output-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(tmp_path / "gsm8k" / "test_tora_-1_seed0_t0.0_s0_e10.jsonl")
    assert len(rows) == 10
    for row in rows:
        code = row["code"][0]
        assert code.count("```output\n42\n```") == 4  # four rounds, each program executed in the sandbox
        assert code.endswith("Reach max function call limit.")
        assert row["pred"] == ["42"]
