"""Sandboxed Python execution for tool-integrated (tora) and program-aided (pal) runs.

Every program runs in a warm sandbox worker (evaluation/sandbox.py, sandbox_worker.py, sandbox_child.py): its own
user, PID, mount, network, IPC and UTS namespaces, uid 1000 inside (nobody outside when the caller is root), no
capabilities, a read-only root holding only the Python installation and system libraries, a private size-capped
tmpfs as its working directory, an empty environment, no_new_privs and a seccomp denylist, rlimits (address space,
CPU, file size, open files, processes) and the harness's wall-clock limit measured from the program's start (the
worker has already started the interpreter and imported sympy). At the deadline the program's PID-namespace init
is killed, so everything it started dies with it. The harness's result semantics are kept (stdout or the answer
expression, last traceback line as report, first 200 + last 200 characters); a timeout reads exactly as in the
harness's released transcripts. `describe()` reports each layer as a sandboxed probe sees it.
"""
from dataclasses import dataclass

from evaluation import sandbox
from evaluation.sandbox_jobs import truncate

# What the harness's timeout_decorator raised inside the program, as its transcripts show it to the model.
TIMEOUT_REPORT = "timeout_decorator.timeout_decorator.TimeoutError: 'Timed Out'"

__all__ = ["ExecResult", "ExecutorConfig", "TIMEOUT_REPORT", "describe", "execute", "truncate"]


@dataclass(frozen=True)
class ExecutorConfig:
    timeout_s: float = 5.0  # the harness's timeout_length
    memory_bytes: int = 4 << 30  # address space; sympy + numpy map about 1 GiB of it
    max_processes: int = 64  # threads count too
    max_file_bytes: int = 16 << 20
    work_dir_bytes: int = 64 << 20  # the private tmpfs
    truncate_chars: int = 400  # the harness's first 200 + "..." + last 200
    unsafe: bool = False  # --unsafe-executor: no namespaces (only where the kernel refuses them)

    def limits(self) -> dict[str, int]:
        return {"memory_bytes": self.memory_bytes, "processes": self.max_processes,
                "file_bytes": self.max_file_bytes, "work_bytes": self.work_dir_bytes}  # fmt: skip


@dataclass(frozen=True)
class ExecResult:
    result: str
    report: str


def execute(code: str, mode: str = "stdout", config: ExecutorConfig = ExecutorConfig()) -> ExecResult:
    """Run one program. mode "stdout": result = what it printed; else an expression to evaluate (pal)."""
    job = {"kind": "exec", "code": code, "mode": mode, "timeout_s": config.timeout_s,
           "truncate_chars": config.truncate_chars, "limits": config.limits()}  # fmt: skip
    reply = sandbox.pool(config.unsafe).run_job(job)
    status = reply["status"]
    if status == "done":
        result, report = reply["value"]["result"], reply["value"]["report"]
    elif status == "timeout":
        result, report = "", TIMEOUT_REPORT
    elif status == "malformed":
        result, report = "", f"SandboxError: malformed result ({reply.get('detail')})"
    else:
        result, report = "", f"SandboxError: the program died ({reply.get('detail')})"
    limit = config.truncate_chars
    return ExecResult(truncate(result.strip(), limit), truncate(report.strip(), limit))


def describe() -> dict:
    """Each isolation layer as a probe job inside the sandbox reports it (or why there is no sandbox)."""
    reason = sandbox.namespaces_unavailable()
    if reason is not None:
        return {"sandbox": False, "reason": reason,
                "tora/pal and grading": "refused unless --unsafe-executor (then: rlimits, no_new_privs, seccomp)"}
    worker = sandbox.Worker()
    try:
        reply = worker.request({"kind": "probe", "timeout_s": 30.0, "limits": ExecutorConfig().limits()})
    finally:
        worker.kill()
    if reply is None or reply["status"] != "done":
        return {"sandbox": False, "reason": f"the probe job failed: {reply}"}
    probe, report = reply["value"], worker.report
    return {
        "sandbox": True,
        "user_namespace": f"uid {probe['uid']} inside, {sandbox.outside_identity()} outside; "
                          f"capabilities {probe['capabilities']:#x}",
        "pid_namespace": f"the program is pid {probe['pid']} of its own namespace; killed at the deadline with "
                         "everything it started",
        "mount_namespace": f"read-only root with {', '.join(probe['root_entries'])}; bound read-only: "
                           f"{', '.join(report['bound'])}",
        "work_dir": f"{probe['cwd']}: private tmpfs, {ExecutorConfig().work_dir_bytes >> 20} MiB",
        "network_namespace": f"interfaces {report['network_interfaces']}; AF_INET socket {probe['inet_socket']}",
        "ipc_uts_namespaces": f"hostname {probe['hostname']!r}",
        "no_new_privs": probe["no_new_privs"],
        "seccomp": "filter (denylist)" if probe["seccomp_mode"] == 2 else "none on this architecture",
        "rlimits": probe["rlimits"],
        "environment": probe["environment"],
    }  # fmt: skip
