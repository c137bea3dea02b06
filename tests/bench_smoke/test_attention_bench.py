"""`rho-bench attention`'s served decode step: the step reads every layer's K/V once (the MB it reports), and the
cache-resident variant reads the same bytes from blocks inside the pool (the operator raises on a block id outside
it)."""
from __future__ import annotations

import pytest
import torch

from bench import attention_bench
from server import cpu_attention


@pytest.fixture(scope="module", autouse=True)
def operator():
    if not cpu_attention.available():
        pytest.skip("the C++ attention operator is not available here (no compiler, or RHO_SERVE_DISABLE_CPP)")


@pytest.mark.parametrize("resident", [False, True])
def test_served_step_reports_the_bytes_it_reads(resident):
    seconds, mb = attention_bench.served_step(batch=3, context=40, repeats=2, resident=resident)
    assert seconds > 0
    assert mb == pytest.approx(3 * 40 * 4 * 32 * 4 * 2 * 4 / 1e6)  # seqs x keys x heads x dim x f32 x (K, V) x layers


def test_the_served_step_table_is_printed(capsys):
    threads = torch.get_num_threads()
    try:
        attention_bench.main(["--contexts", "16", "--batch", "2", "--step-context", "24", "--repeats", "1",
                              "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # main sets torch's count for the process
    out = capsys.readouterr().out
    assert "served decode step (bundled shape, 4 layers, x2 ctx 24)" in out
    assert out.count("GB/s") == 2, out
