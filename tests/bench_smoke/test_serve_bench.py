"""`rho-bench serve` end to end at the smallest size: rho-serve started as a user runs it, the in-process engine
taking its turn in each round, transformers as the unit; the table and the paired ratio line come out (the benchmark
is run by hand for figures, so this keeps it from rotting)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_serve_bench_runs_the_rounds_side_by_side():
    out = subprocess.run(
        [sys.executable, "-m", "bench.serve_bench", "--mode", "generate", "--rounds", "2", "--requests", "4",
         "--concurrency", "2", "--max-new-tokens", "4", "--hf-requests", "1", "--threads", "1",
         "--phase-timeout", "120", "--startup-timeout", "180"],
        cwd=REPO, capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split(" | ")[0].lstrip("| ") for line in out.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["transformers, one at a time", "rho engine in-process (no HTTP)", "rho-serve"], out.stdout
    assert re.search(r"rho engine in-process \(no HTTP\) generate: [\d,]+, [\d,]+", out.stdout), out.stdout
    paired = re.search(r"paired by round: median ([\d.]+)x \(rounds: ([\d.]+)x, ([\d.]+)x\)", out.stdout)
    assert paired and all(float(x) > 0 for x in paired.groups()), out.stdout
