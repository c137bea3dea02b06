"""One job inside a warm worker (Z): fork it into fresh namespaces, wall it in, wait with a deadline, check its reply.

Z forks I; I enters new PID/mount/network/IPC/UTS namespaces and forks P (the job's PID 1), reports P's pid and
exits, so P is reparented to Z (the worker's init). Z reads P's result pipe while P runs, never more than
MAX_RESULT_BYTES, and SIGKILLs P at the deadline: when a PID namespace's init dies the kernel kills every process
in it, so nothing the job started survives the job. Replies: {"status": "done", "value": {...}} or
{"status": "timeout" | "died" | "malformed", "detail": ...}.
"""
import json
import os
import re
import resource
import select
import shutil
import signal
import tempfile
import time

from evaluation import kernel, sandbox_jobs, seccomp

JOB_NAMESPACES = kernel.CLONE_NEWPID | kernel.CLONE_NEWNS | kernel.CLONE_NEWNET | kernel.CLONE_NEWIPC | \
    kernel.CLONE_NEWUTS  # fmt: skip
SANDBOX_UID = 1000
MAX_RESULT_BYTES = 256 << 10  # a truncated result is ~1 KB; a flood is an attack
_VALUE_KEYS = {"exec": {"result": str, "report": str}, "grade": {"equal": bool}, "grade-once": {"equal": bool},
               "probe": None}
# Grading jobs go to a reusable grading child (GradeServer) instead of one child each: a fresh fork of the worker
# grades an item about twice as slowly (copy-on-write faults, cold sympy caches).


def _wall_in(job: dict, namespaces: bool, work_dir: str | None) -> None:
    """In P: private work dir, unprivileged uid, no capabilities, rlimits, no_new_privs, seccomp (in that order)."""
    limits, needs_work_dir = job["limits"], job["kind"] != "grade-server"
    if namespaces:
        if needs_work_dir:
            kernel.mount("tmpfs", work_dir, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                         f"size={limits['work_bytes']},nr_inodes=1024,mode=0700,uid={SANDBOX_UID},gid={SANDBOX_UID}")
        if os.getuid() != SANDBOX_UID:  # root's map: inside 0 is root, inside 1000 is nobody
            os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
            os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
        kernel.drop_capabilities()
    else:
        os.setsid()  # unsafe mode: work_dir is a temporary directory the worker removes afterwards
    work_dir = work_dir if needs_work_dir else "/"
    os.chdir(work_dir)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": work_dir, "TMPDIR": work_dir, "LANG": "C.UTF-8",
                       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # fmt: skip
    for name, value in (("AS", limits["memory_bytes"]), ("CPU", int(job["timeout_s"]) + 1),
                        ("FSIZE", limits["file_bytes"]), ("NOFILE", 256), ("CORE", 0),
                        ("NPROC", limits["processes"])):  # fmt: skip
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))
    seccomp.install()


def _serve_grades(request_fd: int, result_fd: int) -> None:
    """The grading child's loop: one JSON (prediction, reference) line in, one {"equal": bool} line out."""
    for line in os.fdopen(request_fd, "rb"):
        item = json.loads(line)
        _write_all(result_fd, json.dumps(sandbox_jobs.grade(item["prediction"], item["reference"])).encode() + b"\n")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _child(job: dict, namespaces: bool, work_dir: str | None, result_fd: int, request_fd: int | None) -> None:
    """P: never returns."""
    try:
        kept = sorted({result_fd, request_fd} - {None})
        os.closerange(0, kept[0])
        os.closerange(kept[-1] + 1, 1 << 16)
        if len(kept) == 2:
            os.closerange(kept[0] + 1, kept[1])
        for _ in range(3):
            os.open(os.devnull, os.O_RDWR)  # fds 0, 1, 2 (both kept fds are above 2: Z holds 0-2)
        _wall_in(job, namespaces, work_dir)
        if job["kind"] == "grade-server":
            _serve_grades(request_fd, result_fd)
        elif job["kind"] == "grade-once":
            value = sandbox_jobs.grade(job["prediction"], job["reference"])
        elif job["kind"] == "exec":
            value = sandbox_jobs.run_program(job["code"], job["mode"], job["truncate_chars"])
        else:
            value = sandbox_jobs.probe()
        if job["kind"] != "grade-server":
            _write_all(result_fd, json.dumps(value).encode())
    finally:
        os._exit(0)


def _fork_job(job: dict, namespaces: bool, work_dir: str | None, requests: bool = False) -> tuple[int, int, int]:
    """(P's pid, read end of its result pipe, write end of its request pipe or -1)."""
    result_r, result_w = os.pipe()
    request_r, request_w = os.pipe() if requests else (None, -1)
    pid_r, pid_w = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:  # I
        try:
            for fd in (result_r, pid_r, request_w):
                if fd >= 0:
                    os.close(fd)
            if namespaces:
                kernel.unshare(JOB_NAMESPACES)
            pid = os.fork()
            if pid == 0:
                os.close(pid_w)
                _child(job, namespaces, work_dir, result_w, request_r)
            os.write(pid_w, str(pid).encode())
        finally:
            os._exit(0)
    for fd in (result_w, pid_w, request_r):
        if fd is not None:
            os.close(fd)
    os.waitpid(intermediate, 0)
    text = os.read(pid_r, 32)
    os.close(pid_r)
    return int(text or 0), result_r, request_w


def _collect(pid: int, result_r: int, timeout_s: float) -> tuple[bytes, str | None, int]:
    """Read P's pipe until it exits or the deadline; (data, failure or None, exit status)."""
    deadline, data, failure = time.monotonic() + timeout_s, bytearray(), None
    pidfd = os.pidfd_open(pid)
    watched = [result_r, pidfd]
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select(watched, [], [], max(0.0, remaining))[0] if remaining > 0 else []
            if not ready:
                failure = "timeout"
                break
            if result_r in ready:
                chunk = os.read(result_r, 65536)
                data += chunk
                if not chunk:
                    watched.remove(result_r)  # closed early; wait for the exit
                elif len(data) > MAX_RESULT_BYTES:
                    failure = "malformed"
                    break
            if pidfd in ready:
                break
        _kill(pid, namespaces=True)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    if failure is None:
        os.set_blocking(result_r, False)
        try:
            while len(data) <= MAX_RESULT_BYTES and (chunk := os.read(result_r, 65536)):
                data += chunk
        except BlockingIOError:
            pass
        failure = "malformed" if len(data) > MAX_RESULT_BYTES else None
    return bytes(data), failure, os.waitstatus_to_exitcode(status)


def _kill(pid: int, namespaces: bool) -> None:
    for kill in (os.kill, os.killpg):  # the process (its namespace dies with it) and, without one, its group
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _validate(kind: str, data: bytes, exit_code: int) -> dict:
    if not data:
        reason = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit status {exit_code}"
        return {"status": "died", "detail": reason}
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"status": "malformed", "detail": "the result is not JSON"}
    keys = _VALUE_KEYS[kind]
    if keys is not None and not (isinstance(value, dict) and set(value) == set(keys)
                                 and all(isinstance(value[k], t) for k, t in keys.items())):  # fmt: skip
        return {"status": "malformed", "detail": "the result does not have the expected fields"}
    return {"status": "done", "value": value}


def _reap_strays() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


_grade_servers: dict[bool, "GradeServer"] = {}


# Text that could reach Python's builtins through sympy's parse_expr (dunders, exec, getattr, ...) is graded in a
# throwaway child, so that it cannot leave state behind in the reusable one and change later grades.
_SUSPICIOUS = re.compile(r"__|\b(?:exec|eval|compile|open|getattr|setattr|delattr|globals|locals|vars|breakpoint|"
                         r"input|exit|quit|help|memoryview|classmethod|staticmethod|property|type|object)\b")


def run_job(job: dict, namespaces: bool, work_dir: str | None) -> dict:
    if job["kind"] == "grade" and _SUSPICIOUS.search(job["prediction"] + "\n" + job["reference"]):
        return _run_job({**job, "kind": "grade-once"}, namespaces, work_dir)
    if job["kind"] == "grade":
        server = _grade_servers.setdefault(namespaces, GradeServer(namespaces))
        return server.grade(job)
    if namespaces:
        return _run_job(job, namespaces, work_dir)
    work_dir = tempfile.mkdtemp(prefix="rho-eval-unsafe-")
    try:
        return _run_job(job, namespaces, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run_job(job: dict, namespaces: bool, work_dir: str | None) -> dict:
    try:
        pid, result_r, _ = _fork_job(job, namespaces, work_dir)
    except OSError as error:
        return {"status": "died", "detail": f"could not start the job: {error}"}
    if not pid:
        os.close(result_r)
        return {"status": "died", "detail": "could not create the job's namespaces"}
    try:
        data, failure, exit_code = _collect(pid, result_r, job["timeout_s"])
    finally:
        os.close(result_r)
        _reap_strays()
    if failure == "timeout":
        return {"status": "timeout"}
    if failure == "malformed":
        return {"status": "malformed", "detail": f"the result exceeds {MAX_RESULT_BYTES} bytes"}
    return _validate(job["kind"], data, exit_code)


class GradeServer:
    """A reusable grading child (walled in like any job) that grades items one by one, so sympy's caches stay warm.

    An item past its deadline, a child that dies (model text can call sys.exit) or a reply that is not
    {"equal": bool} ends the child (with its namespace); the item counts as a timeout or as wrong, and the next
    item starts a fresh child. Children are also renewed every RENEW_AFTER items (their CPU rlimit accumulates).
    """

    RENEW_AFTER = 500
    CPU_LIMIT_S = 3600

    def __init__(self, namespaces: bool) -> None:
        self.namespaces = namespaces
        self.pid = 0

    def _start(self, limits: dict) -> None:
        job = {"kind": "grade-server", "limits": limits, "timeout_s": self.CPU_LIMIT_S}
        self.pid, self.result_r, self.request_w = _fork_job(job, self.namespaces, None, requests=True)
        if not self.pid:
            raise OSError("could not create the grading child's namespaces")
        self.pidfd, self.buffer, self.served = os.pidfd_open(self.pid), b"", 0

    def stop(self) -> None:
        if self.pid:
            _kill(self.pid, self.namespaces)
            os.waitpid(self.pid, 0)
            for fd in (self.result_r, self.request_w, self.pidfd):
                os.close(fd)
            self.pid = 0

    def _alive(self) -> bool:
        return bool(self.pid) and not select.select([self.pidfd], [], [], 0)[0]

    def grade(self, job: dict) -> dict:
        try:
            if not self._alive():  # a child that died between items must not cost the next item its grade
                self.stop()
                self._start(job["limits"])
            _write_all(self.request_w, json.dumps({k: job[k] for k in ("prediction", "reference")}).encode() + b"\n")
            reply = self._reply(job["timeout_s"])
        except OSError as error:  # EPIPE: the child died between items
            reply = {"status": "died", "detail": str(error)}
        self.served += 1
        if reply["status"] != "done" or self.served >= self.RENEW_AFTER:
            self.stop()
        return reply

    def _reply(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            ready = select.select([self.result_r, self.pidfd], [], [], remaining)[0] if remaining > 0 else []
            if not ready:
                return {"status": "timeout"}
            if self.result_r in ready:
                chunk = os.read(self.result_r, 65536)
                self.buffer += chunk
                if len(self.buffer) > MAX_RESULT_BYTES:
                    return {"status": "malformed", "detail": "the reply is too large"}
                if chunk:
                    continue
            if self.pidfd in ready or not chunk:
                return {"status": "died", "detail": "the grading child exited"}
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply = _validate("grade", line, 0)
        if self.buffer:  # a reply nobody asked for: the child is not to be trusted any more
            return {"status": "malformed", "detail": "unexpected extra output"}
        return reply
