"""Where the sandbox cannot run: a clear refusal unless --unsafe-executor; and the sandbox for an unprivileged caller."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import sandbox
from evaluation.executor import ExecutorConfig, execute

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_namespaces(monkeypatch):
    monkeypatch.setattr(sandbox, "namespaces_unavailable", lambda: "unshare: Operation not permitted")


def test_tora_and_grading_refuse_without_namespaces(no_namespaces, tmp_path, capsys):
    from evaluation.cli import main

    (tmp_path / "m" / "gsm8k").mkdir(parents=True)
    (tmp_path / "m" / "gsm8k" / "test_cot_-1_seed0_t0.0_s0_e-1.jsonl").write_text(
        '{"idx": 0, "question": "q", "answer": "#### 1", "code": ["The answer is 1"], "pred": ["1"], "score": [true]}\n')
    assert main(["regrade", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "user namespaces" in message and "--unsafe-executor" in message and "Traceback" not in message
    with pytest.raises(sandbox.SandboxUnavailable, match="--unsafe-executor"):
        execute("print(1)")
    assert main(["regrade", str(tmp_path), "--unsafe-executor"]) == 0


def test_unsafe_executor_still_has_rlimits_and_seccomp(no_namespaces):
    unsafe = ExecutorConfig(timeout_s=2.0, unsafe=True)
    assert execute("print(6 * 7)", config=unsafe).result == "42"
    assert execute("import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000))", config=unsafe).result == "-1"
    assert execute("while True: pass", config=unsafe).report.endswith("'Timed Out'")
    assert not any(Path("/tmp").glob("rho-eval-unsafe-*"))


def _nobody_can_run_this_checkout() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to nobody"
    try:
        probe = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import evaluation"],
                               user=65534, group=65534, extra_groups=[], capture_output=True, cwd="/")  # fmt: skip
    except PermissionError:
        return "nobody cannot execute this interpreter (e.g. it lives under /root)"
    return None if probe.returncode == 0 else "nobody cannot read this interpreter or checkout (e.g. under /root)"


@pytest.mark.skipif(sandbox.namespaces_unavailable() is not None, reason="no sandbox on this machine")
def test_the_sandbox_works_for_an_unprivileged_caller():
    reason = _nobody_can_run_this_checkout()
    if reason:
        pytest.skip(reason)
    script = ("import sys; sys.path.insert(0, %r)\nfrom evaluation.executor import execute, describe\n"
              "print(execute('import os\\nprint(os.getuid(), os.getpid())').result)\n"
              "print(execute('import ctypes\\nprint(ctypes.CDLL(None).unshare(0x10000000))').result)" % str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], user=65534, group=65534, extra_groups=[],
                          capture_output=True, text=True, cwd="/", timeout=120)  # fmt: skip
    assert done.stdout.split("\n")[:2] == ["1000 1", "-1"], done.stderr
