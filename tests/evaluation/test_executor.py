"""The sandboxed executor: harness semantics, and hostile programs stopped or refused while the run goes on."""
import os
import socket
import threading
import time

import pytest

from evaluation.executor import ExecutorConfig, describe, execute, truncate

FAST = ExecutorConfig(timeout_s=3.0)


def _sandboxed_processes() -> list[str]:
    """Live (non-zombie) processes started from a sandbox's boot script."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"boot.py\0program.py" in cmdline and state != "Z":
            found.append(pid)
    return found


def test_stdout_result_and_errors_like_the_harness():
    assert execute("print(6 * 7)") .__dict__ == {"result": "42", "report": "Done"}
    assert execute("1/0").__dict__ == {"result": "", "report": "ZeroDivisionError: division by zero"}
    assert execute("x = input('?')").report == "RuntimeError"  # the harness refuses input(
    assert execute("def solution():\n    return 7 / 2", mode="solution()").result == "3.5"
    assert execute("print('a' * 1000)").result == "a" * 200 + "..." + "a" * 200
    assert truncate("x" * 10) == "x" * 10


def test_sympy_programs_run():
    assert execute("from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 4, x))").result == "[-2, 2]"


def test_infinite_loop_is_stopped():
    started = time.monotonic()
    assert execute("while True:\n    pass", config=FAST).report == "Timeout Error"
    assert time.monotonic() - started < FAST.timeout_s + 3


def test_memory_bomb_is_stopped():
    result = execute("x = bytearray(64 * 2**30)", config=ExecutorConfig(memory_bytes=1 << 30))
    assert result.report == "MemoryError"


def test_fork_bomb_is_refused_and_contained():
    assert "not allowed" in execute("import os\nwhile True:\n    os.fork()", config=FAST).report
    # Past the Python layer (libc fork through ctypes): the process cap and the group kill contain it.
    report = execute("import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()", config=FAST).report
    assert report in ("Timeout Error",) or report.startswith("SandboxError")
    time.sleep(0.5)
    assert _sandboxed_processes() == []  # nothing left running


def test_writes_outside_its_directory_are_refused(tmp_path):
    target = tmp_path / "owned.txt"
    report = execute(f"open({str(target)!r}, 'w').write('pwned')").report
    assert "not allowed" in report and not target.exists()
    assert execute("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())").result == "ok"


def test_reading_the_callers_files_is_refused():
    report = execute(f"print(open({os.path.abspath(__file__)!r}).read())").report
    assert "not allowed" in report
    assert "not allowed" in execute(f"import os\nprint(os.listdir({os.getcwd()!r}))").report


def test_network_connections_are_refused():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    program = f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')"
    result = execute(program, config=FAST)
    assert result.result == "" and "not allowed" in result.report
    time.sleep(0.2)
    assert accepted == []
    listener.close()


def test_environment_secrets_are_scrubbed(monkeypatch):
    monkeypatch.setenv("RHO_EVAL_TEST_SECRET", "hunter2")
    result = execute("import os\nprint(sorted(os.environ))")
    assert "RHO_EVAL_TEST_SECRET" not in result.result and "hunter2" not in result.result
    assert "PATH" in result.result


def test_a_run_goes_on_after_hostile_programs():
    for program in ("while True: pass", "import os\nos.fork()", "x = [0] * 10**11"):
        execute(program, config=FAST)
    assert execute("print(1 + 1)").result == "2"


def test_describe_reports_layers():
    layers = describe()
    assert layers["python_audit_hook"] is True
    assert set(layers) >= {"network_namespace", "drops_to_nobody", "pids_cgroup"}


@pytest.mark.skipif(not describe()["network_namespace"], reason="this kernel gives no network namespace")
def test_network_namespace_has_no_route_even_below_python():
    # Raw libc socket calls bypass the audit hook; the empty namespace still has no way out.
    program = (
        "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(2, 1, 0)\n"
        "addr = struct.pack('<HH4s8x', 2, 0x5000, bytes([1, 1, 1, 1]))\n"
        "print(libc.connect(fd, addr, len(addr)), ctypes.get_errno())"
    )
    result = execute(program, config=FAST)
    assert result.report == "Done" and result.result.startswith("-1 ")  # ENETUNREACH
