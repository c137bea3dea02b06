"""The executor keeps the harness's semantics: results, reports, truncation, the timeout text, pal answers."""
import pytest

from evaluation.executor import TIMEOUT_REPORT, ExecutorConfig, describe, execute, truncate
from evaluation.sandbox import namespaces_unavailable

pytestmark = pytest.mark.skipif(namespaces_unavailable() is not None, reason=f"no sandbox: {namespaces_unavailable()}")
FAST = ExecutorConfig(timeout_s=2.0)


def test_stdout_result_and_errors_like_the_harness():
    assert execute("print(6 * 7)").__dict__ == {"result": "42", "report": "Done"}
    assert execute("1/0").__dict__ == {"result": "", "report": "ZeroDivisionError: division by zero"}
    assert execute("x = input('?')").report == "RuntimeError"  # the harness refuses input(
    assert execute("import sys\nsys.exit(7)").report == "SystemExit: 7"
    assert execute("def solution():\n    return 7 / 2", mode="solution()").result == "3.5"
    assert truncate("x" * 10) == "x" * 10


def test_large_output_is_truncated_not_a_timeout():
    result = execute("print('a' * 100 + 'b' * 100_000 + 'c' * 100)")
    assert result.report == "Done" and result.result == "a" * 100 + "b" * 100 + "..." + "b" * 100 + "c" * 100


def test_sympy_programs_run_preloaded():
    assert execute("from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 4, x))").result == "[-2, 2]"


def test_timeout_reads_as_in_the_released_transcripts():
    assert execute("while True:\n    pass", config=FAST).__dict__ == {"result": "", "report": TIMEOUT_REPORT}
    assert TIMEOUT_REPORT.endswith("TimeoutError: 'Timed Out'")


def test_memory_limit_raises_memory_error():
    assert execute("x = bytearray(64 * 2**30)", config=ExecutorConfig(memory_bytes=2 << 30)).report == "MemoryError"


def test_each_program_starts_from_a_fresh_directory_and_globals():
    assert execute("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())").result == "ok"
    assert execute("import os\nprint(os.listdir('.'))").result == "[]"
    assert "NameError" in execute("print(scratch)").report


def test_describe_reports_every_layer():
    layers = describe()
    assert layers["sandbox"] is True and layers["no_new_privs"] is True
    assert layers["user_namespace"].startswith("uid 1000 inside") and "capabilities 0x0" in layers["user_namespace"]
    assert "pid 1" in layers["pid_namespace"] and "['lo']" in layers["network_namespace"]
    assert layers["rlimits"]["NPROC"] == 64


def test_sandbox_info_command(capsys):
    from evaluation.cli import main

    assert main(["sandbox-info"]) == 0
    assert '"seccomp": "filter (denylist)"' in capsys.readouterr().out
