"""Hostile programs and answers, run as the tool loop and the grader run them: each must be contained.

Contained means: nothing outside the sandbox is written or read (caller files, secrets, environment, sockets), no
process is left behind, the caller and the pool go on, and the result is a clean report. The cases of issue 16's
table come first, then escapes, exfiltration, persistence, denial of service and attacks on the grader.
"""
import os
import socket
import time

import pytest

from evaluation.executor import TIMEOUT_REPORT, ExecutorConfig, execute
from evaluation.sandbox import namespaces_unavailable
from evaluation.scoring import grade_pairs
from tests.evaluation.sandbox_helpers import Listener, grade_servers, job_processes

pytestmark = pytest.mark.skipif(namespaces_unavailable() is not None, reason=f"no sandbox: {namespaces_unavailable()}")
FAST = ExecutorConfig(timeout_s=2.0)
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@pytest.fixture
def caller_files(tmp_path):
    """A caller-owned file and a 0600 secret the programs attack; checked unchanged afterwards."""
    (tmp_path / "owned.txt").write_text("original")
    (tmp_path / "secret.txt").write_text("hunter2-secret")
    os.chmod(tmp_path / "secret.txt", 0o600)
    yield tmp_path
    assert (tmp_path / "owned.txt").read_text() == "original"
    assert (tmp_path / "secret.txt").read_text() == "hunter2-secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owned.txt", "secret.txt"], "something was written here"


def run_contained(program: str, config: ExecutorConfig = FAST):
    """execute() the program, then check that nothing it started is alive and that the pool still works."""
    result = execute(program, config=config)
    time.sleep(0.05)
    assert job_processes() - grade_servers() == set(), "a process outlived execute()"
    assert execute("print(1 + 1)").result == "2"
    assert "hunter2" not in result.result + result.report
    return result


def test_ctypes_cgroup_escape_then_forks_hit_the_process_limit():
    program = LIBC + (
        "for path in ('/sys/fs/cgroup/pids/cgroup.procs', '/sys/fs/cgroup/cgroup.procs'):\n"
        "    try: open(path, 'w').write('0')\n    except OSError: pass\n"
        "n = 0\nfor _ in range(100):\n    pid = libc.fork()\n    if pid == 0:\n        libc.pause()\n"
        "    n += pid > 0\nprint(n)"
    )
    result = run_contained(program)
    assert result.report == "Done" and int(result.result) < 64


def test_hard_link_to_a_caller_file_is_impossible(caller_files):
    program = (f"import os\nfor name in ('owned.txt', 'secret.txt'):\n    try:\n"
               f"        os.link('{caller_files}/' + name, name); open(name, 'a').write('pwned'); print(open(name).read())\n"
               f"    except OSError as e: print(type(e).__name__)")  # fmt: skip
    assert run_contained(program).result == "FileNotFoundError\nFileNotFoundError"


@pytest.mark.parametrize("operation", [
    "os.rename('{d}/owned.txt', '{d}/moved')", "os.remove('{d}/owned.txt')", "os.mkdir('{d}/new')",
    "os.symlink('/etc', '{d}/link')", "os.chmod('{d}/secret.txt', 0o777)", "os.truncate('{d}/owned.txt', 0)",
    "open('{d}/owned.txt', 'w').write('pwned')", "os.chmod('/usr/bin', 0o777)", "open('/usr/pwned', 'w')",
    "os.remove('/dev/null')",
])  # fmt: skip
def test_changes_outside_the_work_dir_fail(caller_files, operation):
    result = run_contained("import os\n" + operation.format(d=caller_files))
    assert result.report.split(":")[0] in ("FileNotFoundError", "OSError", "PermissionError"), result.report


def test_symlink_swapping_cannot_reach_outside(caller_files):
    program = (f"import os, threading\nos.makedirs('{caller_files}', exist_ok=True)\n"
               "def swap():\n    for _ in range(2000):\n        try:\n            os.remove('l')\n        except OSError: pass\n"
               f"        os.symlink('{caller_files}/owned.txt', 'l')\n"
               "t = threading.Thread(target=swap); t.start()\nfor _ in range(2000):\n    try: open('l', 'w').write('pwned')\n"
               "    except OSError: pass\nt.join()\nprint('done')")  # fmt: skip
    assert run_contained(program).result == "done"  # the writes land in the sandbox's own tmpfs, if anywhere


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/shadow", "/root/.profile", "/proc/1/environ", "/home",
                                  "/proc/self/root", "/sys/fs/cgroup"])
def test_caller_files_are_not_visible(path):
    result = run_contained(f"import os\nprint(os.path.exists({path!r}))")
    assert result.result == "False"


def test_the_callers_secrets_are_not_in_the_environment(monkeypatch, caller_files):
    monkeypatch.setenv("RHO_EVAL_TEST_SECRET", "hunter2")
    program = LIBC + ("environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, 'environ')\n"
                      "names = []\ni = 0\nwhile environ[i]:\n    names.append(environ[i].split(b'=')[0].decode()); i += 1\n"
                      f"import os\nprint(sorted(names), os.path.exists('{caller_files}/secret.txt'))")  # fmt: skip
    result = run_contained(program)
    assert "RHO_EVAL_TEST_SECRET" not in result.result and result.result.endswith("False")


def test_setns_and_network_sockets_are_refused():
    listener = Listener()
    program = LIBC + (
        "import struct, os\nfd = os.open('/proc/1/ns/net', os.O_RDONLY) if os.path.exists('/proc/1/ns/net') else -1\n"
        "print(libc.setns(fd, 0x40000000), ctypes.get_errno())\n"
        f"s = libc.socket(2, 1, 0)\naddr = struct.pack('<HH4s8x', 2, socket_port := {listener.port} >> 8 | "
        f"({listener.port} & 255) << 8, bytes([127, 0, 0, 1]))\n"
        "print(s, ctypes.get_errno(), libc.connect(s, addr, len(addr)))\n"
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=1)\nexcept OSError as e: print(e.errno)"
        % listener.port
    )
    result = run_contained(program)
    assert result.report == "Done" and result.result.split("\n")[0] == "-1 1"  # setns: EPERM
    assert result.result.split("\n")[1].startswith("-1 97")  # socket(AF_INET): EAFNOSUPPORT
    assert listener.close() == []


def test_host_unix_sockets_are_unreachable(tmp_path):
    path = str(tmp_path / "host.sock")
    servers = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)]
    servers[0].bind(path)
    servers[1].bind("\0rho-eval-test-abstract")
    for server in servers:
        server.listen(1)
        server.settimeout(0.2)
    program = ("import socket\nfor address in (%r, '\\0rho-eval-test-abstract'):\n    s = socket.socket(socket.AF_UNIX)\n"
               "    try:\n        s.connect(address); print('connected')\n    except OSError as e: print(type(e).__name__)"
               % path)  # fmt: skip
    assert run_contained(program).result == "FileNotFoundError\nConnectionRefusedError"
    for server in servers:
        with pytest.raises(TimeoutError):
            server.accept()
        server.close()


def test_fork_exec_of_a_shell_is_refused(caller_files):
    program = ("import _posixsubprocess, os\n"
               f"args = [b'/bin/sh', b'-c', b'echo pwned > {caller_files}/shell.txt']\n"
               "r, w = os.pipe()\n"
               "pid = _posixsubprocess.fork_exec(args, [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w,"
               " False, False, -1, None, None, None, -1, None, False)\nprint(os.waitpid(pid, 0)[1])")  # fmt: skip
    result = run_contained(program)
    assert result.report.startswith("PermissionError") or result.result not in ("0", ""), result


@pytest.mark.parametrize("target", ["os.getppid()", "0", "-1", "1"])
def test_killing_the_caller_or_everything_reaches_only_the_sandbox(target):
    result = run_contained(LIBC + f"import os\nprint(libc.kill({target}, 9))\nprint('still here')")
    assert os.getpid() > 0 and result.report in ("Done", "") or result.report.startswith("SandboxError")


def test_a_daemon_holding_the_result_pipe_dies_with_the_program(tmp_path):
    program = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        time.sleep(3)\n        open('{tmp_path}/late.txt', 'w').write('late')\n    os._exit(0)\n"
               "print('parent done')")  # fmt: skip
    result = run_contained(program, ExecutorConfig(timeout_s=10.0))
    assert result.__dict__ == {"result": "parent done", "report": "Done"}
    time.sleep(3.5)
    assert not (tmp_path / "late.txt").exists() and job_processes() - grade_servers() == set()


@pytest.mark.parametrize("payload", ['{"x": 1}', "not json", '{"result": 1, "report": []}', "x" * (1 << 20)])
def test_a_forged_result_is_rejected_cleanly(payload):
    program = (f"import os\nfor fd in range(3, 64):\n    try: os.write(fd, {payload.encode()!r})\n"
               "    except OSError: pass\nos._exit(0)")  # the result pipe is one of the few open fds
    result = run_contained(program)
    assert result.result == "" and result.report.startswith("SandboxError: malformed result")


def test_persistence_between_programs_is_impossible():
    execute("import os\nopen('planted.py', 'w').write('x')\nif os.fork() == 0:\n    import time; time.sleep(60)")
    result = run_contained("import os\nprint(os.listdir('.'), os.path.exists('/tmp/planted.py'))")
    assert result.result == "[] False"


@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    os.fork()",
    "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
    "open('big', 'wb').write(b'x' * (200 << 20))",
    "x = [0] * 10**11",
    "import os\nwhile True:\n    os.open('/dev/null', os.O_RDONLY)",
])  # fmt: skip
def test_denial_of_service_is_bounded(program):
    result = run_contained(program)
    assert result.report and result.report != "Done"


@pytest.mark.parametrize("call", ["libc.ptrace(16, 1, 0, 0)", "libc.unshare(0x10000000)", "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
                                  "libc.syscall(321, 0, 0, 0)", "libc.syscall(298, 0, 0, 0, 0, 0)", "libc.chroot(b'/tmp')"])  # fmt: skip
def test_kernel_attack_surface_is_refused(call):
    result = run_contained(LIBC + f"print({call}, ctypes.get_errno())")
    assert result.result == "-1 1", result  # EPERM from the seccomp filter


def test_hostile_answers_never_run_outside_and_a_dead_grader_is_a_wrong_answer(tmp_path):
    pwned = tmp_path / "pwned.txt"
    pairs = [(f"__import__('pathlib').Path('{pwned}').write_text('x')", "1"), ("__import__('sys').exit(7)", "1"),
             ("__import__('os').kill(__import__('os').getpid(), 9)", "1"), ("\\frac{1}{2}", "0.5"),
             ("__import__('builtins').__setattr__('str', lambda x: '1')", "2"), ("x+1", "1+x"), ("3", "2")]  # fmt: skip
    scores, timeouts = grade_pairs(pairs, num_workers=2)
    assert scores == [False, False, False, True, False, True, False] and timeouts == 0
    assert not pwned.exists()


def test_a_grading_item_that_never_ends_is_a_timeout():
    slow = "0." + "7" * 2000  # sympy takes seconds on this one (a MATH answer in outputs.zip had 1,000 digits)
    scores, timeouts = grade_pairs([(slow, "\\frac{5}{9}"), ("\\frac{1}{2}", "0.5")], num_workers=1, timeout_s=0.3)
    assert scores == [False, True] and timeouts == 1
