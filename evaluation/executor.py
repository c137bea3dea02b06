"""Sandboxed Python execution for tool-integrated (tora) and program-aided (pal) runs.

One fresh process per execution, in its own session (the whole process group is killed at the time limit, which
also ends fork bombs), with what Linux allows without assuming root:
- time: wall-clock limit (the harness's 5 s -> "Timeout Error") plus RLIMIT_CPU;
- memory: RLIMIT_AS; files: RLIMIT_FSIZE, RLIMIT_NOFILE, no core dumps; processes: RLIMIT_NPROC;
- network: a new, empty network namespace (unshare(CLONE_NEWNET); CLONE_NEWUSER too when not root) where the
  kernel allows it; always also refused at the Python level by an audit hook (sockets other than AF_UNIX);
- processes: as root (whom RLIMIT_NPROC does not bind) a pids cgroup with pids.max where /sys/fs/cgroup/pids is
  writable; the audit hook also refuses fork/exec/subprocess;
- files: a private temporary working directory (mode 0700), removed afterwards; as root the child drops to
  `nobody` when nobody can run this interpreter (so the caller's files are not writable); the audit hook refuses
  writes outside the directory and reads outside it and the Python installation / system libraries;
- environment: empty except PATH, HOME (= the working directory), LANG and single-thread BLAS settings.
`describe()` reports which layers are active on this machine.
"""
import ctypes
import functools
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

_BOOT_SOURCE = (Path(__file__).parent / "sandbox_boot.py").read_text(encoding="utf-8")
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_MAX_RESULT_BYTES = 1 << 20
PIDS_CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


@dataclass(frozen=True)
class ExecutorConfig:
    timeout_s: float = 5.0  # the harness's timeout_length
    memory_bytes: int = 4 << 30  # address space; sympy + numpy map about 1 GiB of it
    max_processes: int = 64  # threads count too
    max_file_bytes: int = 16 << 20
    truncate_chars: int = 400  # the harness's first 200 + "..." + last 200


@dataclass(frozen=True)
class ExecResult:
    result: str
    report: str


def truncate(text: str, max_chars: int = 400) -> str:
    half = max_chars // 2
    return text[:half] + "..." + text[-half:] if len(text) > max_chars else text


def _unshare(flags: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(flags) == 0


@functools.cache
def network_isolation_available() -> bool:
    """Whether a child can get its own network namespace here (probed in a throwaway process)."""
    flags = _CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
    probe = f"import ctypes,sys; sys.exit(0 if ctypes.CDLL(None).unshare({flags}) == 0 else 1)"
    return subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, timeout=30).returncode == 0


@functools.cache
def can_drop_to_nobody() -> bool:
    """Root only: whether `nobody` can start this interpreter (a venv under /root, mode 0700, cannot)."""
    if os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run([sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=30,
                               preexec_fn=_become_nobody, cwd="/")  # fmt: skip
    except PermissionError:  # exec itself refused
        return False
    return probe.returncode == 0


def _become_nobody() -> None:
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


def _make_pids_cgroup(max_processes: int) -> Path | None:
    """A cgroup (v1 pids controller) capping the child's process count; None where we may not create one."""
    group = PIDS_CGROUP_ROOT / f"rho-eval-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(max_processes))
    except OSError:
        if group.is_dir():
            _remove_cgroup(group)
        return None
    return group


def _remove_cgroup(group: Path | None) -> None:
    if group is not None:
        try:
            group.rmdir()
        except OSError:
            pass  # still busy (a straggler being reaped); the kernel keeps it harmlessly


def describe() -> dict[str, bool | str]:
    group = _make_pids_cgroup(1)
    _remove_cgroup(group)
    return {
        "network_namespace": network_isolation_available(),
        "python_audit_hook": True,
        "drops_to_nobody": can_drop_to_nobody(),
        "pids_cgroup": group is not None,
        "rlimits": "AS, CPU, FSIZE, NOFILE, CORE, NPROC (NPROC does not bind root)",
    }


def _child_setup(config: ExecutorConfig, isolate_network: bool, cgroup: Path | None, drop: bool) -> None:
    """preexec_fn: runs in the child between fork and exec (new session already set)."""
    cpu_s = int(config.timeout_s) + 1
    limits = [(resource.RLIMIT_AS, config.memory_bytes), (resource.RLIMIT_CPU, cpu_s),
              (resource.RLIMIT_FSIZE, config.max_file_bytes), (resource.RLIMIT_NOFILE, 256),
              (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, config.max_processes)]  # fmt: skip
    for kind, value in limits:
        resource.setrlimit(kind, (value, value))
    if cgroup is not None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    if isolate_network:
        _unshare(_CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWUSER | _CLONE_NEWNET)
    if drop:
        _become_nobody()


def _environment(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir,
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip


def _prepare_workdir(code: str, drop: bool) -> str:
    workdir = tempfile.mkdtemp(prefix="rho-eval-exec-")
    Path(workdir, "program.py").write_text(code, encoding="utf-8")
    Path(workdir, "boot.py").write_text(_BOOT_SOURCE, encoding="utf-8")
    if drop:
        nobody = pwd.getpwnam("nobody")
        for path in (workdir, f"{workdir}/program.py", f"{workdir}/boot.py"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return workdir


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _read_result(read_fd: int) -> dict | None:
    with os.fdopen(read_fd, "rb") as handle:
        data = handle.read(_MAX_RESULT_BYTES)
    try:
        return json.loads(data.decode("utf-8")) if data else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def execute(code: str, mode: str = "stdout", config: ExecutorConfig = ExecutorConfig()) -> ExecResult:
    """Run one program. mode "stdout": result = what it printed; else an expression to evaluate (pal)."""
    drop = can_drop_to_nobody()
    workdir = _prepare_workdir(code, drop)
    read_fd, write_fd = os.pipe()
    isolate = network_isolation_available()
    cgroup = _make_pids_cgroup(config.max_processes) if os.geteuid() == 0 else None
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "boot.py", "program.py", mode, str(write_fd)],
            cwd=workdir, env=_environment(workdir), pass_fds=(write_fd,), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=functools.partial(_child_setup, config, isolate, cgroup, drop),
        )  # fmt: skip
        os.close(write_fd)
        timed_out = _wait(process, config.timeout_s)
        payload = _read_result(read_fd)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        _remove_cgroup(cgroup)
    return _to_result(payload, timed_out, process.returncode, config)


def _wait(process: subprocess.Popen, timeout_s: float) -> bool:
    try:
        process.wait(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(process)  # also reaps anything the program left behind in its session
    return timed_out


def _to_result(payload: dict | None, timed_out: bool, returncode: int, config: ExecutorConfig) -> ExecResult:
    if timed_out:
        result, report = "", "Timeout Error"
    elif payload is None:
        reason = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        result, report = "", f"SandboxError: the program died ({reason})"
    else:
        result, report = str(payload["result"]), str(payload["report"])
    limit = config.truncate_chars
    return ExecResult(truncate(result.strip(), limit), truncate(report.strip(), limit))
