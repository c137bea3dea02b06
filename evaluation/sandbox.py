"""Host side of the sandbox: warm workers (evaluation/sandbox_worker.py) in a thread-safe pool, and the probe.

`run_job` takes an idle worker (starting one when none is idle), sends one JSON job and waits for its reply with a
safety margin; a worker that dies, hangs or answers nonsense is killed (which kills its whole PID namespace) and
replaced, and the job counts as failed. Workers need user namespaces; where the kernel refuses them,
`SandboxUnavailable` says why, and only an explicit `unsafe=True` (`--unsafe-executor`) runs jobs without the wall.
"""
import atexit
import functools
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from evaluation.errors import EvalError
from evaluation.latex_antlr import antlr_dir

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0  # interpreter start + sympy/numpy import on a loaded machine
REPLY_MARGIN_S = 10.0  # beyond the job's own deadline, which the worker enforces
NOBODY = 65534


class SandboxUnavailable(EvalError):
    pass


def _maps() -> dict[str, str]:
    if os.geteuid() == 0:  # inside 0 -> root (the worker's init), inside 1000 -> nobody (every job)
        return {"uid_map": f"0 0 1\n1000 {NOBODY} 1\n", "gid_map": f"0 0 1\n1000 {NOBODY} 1\n"}
    return {"setgroups": "deny", "uid_map": f"1000 {os.geteuid()} 1\n", "gid_map": f"1000 {os.getegid()} 1\n"}


def outside_identity() -> str:
    return f"nobody ({NOBODY})" if os.geteuid() == 0 else f"uid {os.geteuid()} (the caller)"


class Worker:
    """One warm worker process tree (K -> Z); `request` is not thread-safe (the pool hands a worker to one caller)."""

    def __init__(self, unsafe: bool = False) -> None:
        setup = {"namespaces": not unsafe, "antlr_dir": str(antlr_dir())}
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT), str(PROJECT_ROOT), json.dumps(setup)], cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        self._buffer = b""
        try:
            self.report = self._start(unsafe)
        except BaseException:
            self.kill()
            raise

    def _start(self, unsafe: bool) -> dict:
        line = self._readline(START_TIMEOUT_S)
        if line == b"U" and not unsafe:
            for name, text in _maps().items():
                Path(f"/proc/{self.process.pid}/{name}").write_text(text)
            self._send(b"G\n")
            line = self._readline(START_TIMEOUT_S)
        if line is not None and line.startswith(b"READY "):
            return json.loads(line[6:])
        if line is not None and line.startswith(b"FAILED "):
            raise SandboxUnavailable(f"the sandbox could not be set up: {json.loads(line[7:])}")
        self.kill()
        stderr = self.process.stderr.read().decode(errors="replace").strip().splitlines()
        raise SandboxUnavailable(f"the sandbox worker did not start: {stderr[-1] if stderr else 'no output'}")

    def _send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def _readline(self, timeout_s: float) -> bytes | None:
        deadline, fd = time.monotonic() + timeout_s, self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def request(self, job: dict) -> dict | None:
        """The worker's reply, or None when it died or hung (it is then killed; do not reuse it)."""
        try:
            self._send(json.dumps(job).encode() + b"\n")
            line = self._readline(job["timeout_s"] + REPLY_MARGIN_S)
            reply = json.loads(line) if line is not None else None
        except (OSError, ValueError):
            reply = None
        if not isinstance(reply, dict) or "status" not in reply:
            self.kill()
            return None
        return reply

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # K; Z follows by its parent-death signal, then the whole namespace
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


class WorkerPool:
    def __init__(self, unsafe: bool = False) -> None:
        self.unsafe = unsafe
        self._idle: list[Worker] = []
        self._lock = threading.Lock()

    def run_job(self, job: dict) -> dict:
        """The job's reply. A worker that fails is replaced and the job tried once more on a fresh one (an idle
        worker can have died since its last job); failing twice yields {"status": "died"}."""
        for _ in range(2):
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None or not worker.alive():
                worker = Worker(self.unsafe)
            reply = worker.request(job)
            if reply is not None:
                with self._lock:
                    self._idle.append(worker)
                return reply
        return {"status": "died", "detail": "the sandbox worker died"}

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()


_pools: dict[bool, WorkerPool] = {}
_pools_lock = threading.Lock()


def pool(unsafe: bool = False) -> WorkerPool:
    """The process-wide pool (safe or unsafe); refuses the safe one where user namespaces are unavailable."""
    if not unsafe:
        require_namespaces()
    with _pools_lock:
        if unsafe not in _pools:
            _pools[unsafe] = WorkerPool(unsafe)
        return _pools[unsafe]


@atexit.register
def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
    for each in pools:
        each.close()


@functools.cache
def namespaces_unavailable() -> str | None:
    """Why this machine cannot run the sandbox (None when it can): a real worker is started and probed."""
    try:
        worker = Worker(unsafe=False)
    except (SandboxUnavailable, OSError) as error:
        return str(error)
    reply = worker.request({"kind": "probe", "timeout_s": 30.0, "limits": default_limits()})
    worker.kill()
    if reply is None or reply.get("status") != "done":
        return f"the sandbox's probe job failed: {reply}"
    return None


def require_namespaces() -> None:
    reason = namespaces_unavailable()
    if reason is not None:
        raise SandboxUnavailable(
            f"model-written code and answers can only be handled in a sandbox, which needs Linux user namespaces "
            f"({reason}); enable them (e.g. sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces), "
            f"or pass --unsafe-executor to run them without isolation"
        )


def default_limits() -> dict[str, int]:
    return {"memory_bytes": 4 << 30, "processes": 64, "file_bytes": 16 << 20, "work_bytes": 64 << 20}
