"""A warm sandbox worker: started by `evaluation.sandbox`, it walls itself in once, then forks one child per job.

argv: project root, setup JSON. Start-up (trusted code only, before any model text is seen):
1. this process K enters new user, mount, PID, network, IPC and UTS namespaces, says "U" on stdout and waits for
   "G" while the host writes its uid/gid maps (root: inside 0 -> 0, inside 1000 -> nobody; otherwise inside
   1000 -> the caller);
2. K forks Z, the namespace's init (PID 1), and only waits for it; Z dies with K (parent-death signal) and the
   kernel then kills every process of the namespace;
3. Z imports sympy, numpy and the grader, builds the read-only root (sandbox_view) and serves one JSON request per
   line on stdin, one reply per line on stdout.
Per job Z forks I, which enters fresh PID, mount, network, IPC and UTS namespaces and forks P, the job's init; I
exits, so P is Z's child. P mounts its size-capped tmpfs at /work, becomes uid 1000 with no capabilities, sets
rlimits, no_new_privs and the seccomp filter, runs the job and writes its JSON result to a pipe. Z reads that pipe
while P runs (size-capped), kills P at the deadline (its whole namespace dies with it), validates the result.
Unsafe mode (no user namespaces) skips every namespace: P gets its own session, rlimits, no_new_privs, seccomp.
"""
import json
import os
import signal
import sys

ALL_NAMESPACES = 0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000  # kernel.CLONE_NEW*


def _preload(setup: dict) -> None:
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    import sympy  # noqa: F401 (the warm part: programs and grading find it imported)

    try:
        import numpy  # noqa: F401
    except ImportError:
        pass
    from evaluation import grade, sandbox_child, sandbox_jobs  # noqa: F401
    from evaluation.latex_antlr import antlr_dir

    if setup.get("antlr_dir"):
        os.environ["RHO_EVAL_ANTLR_DIR"] = setup["antlr_dir"]
    grade.math_equal("\\frac{1}{2}", "x")  # loads the LaTeX parsers and sympy's lazy modules now
    setup["python_dirs"] = [str(antlr_dir())]


def _enter_namespaces(setup: dict, control_in, control_out) -> None:
    from evaluation import kernel

    kernel.unshare(ALL_NAMESPACES)
    control_out.write(b"U\n")
    control_out.flush()
    if control_in.readline() != b"G\n":
        os._exit(3)
    if os.getuid() == 0:
        os.setgroups([])  # the host mapped inside 0 to root and left setgroups allowed


def _become_init(namespaces: bool) -> None:
    """Fork Z; this process (K) only waits for it, so that killing K (the host's handle) ends everything."""
    pid = os.fork()
    if pid:
        os.close(0)
        os.close(1)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    from evaluation import kernel

    kernel.set_parent_death_signal(signal.SIGKILL)
    kernel.become_subreaper()  # without a PID namespace (unsafe mode) jobs must still be reparented to us


def _setup(setup: dict, control_in, control_out) -> dict:
    from evaluation import sandbox_view

    namespaces = setup["namespaces"]
    if namespaces:
        _enter_namespaces(setup, control_in, control_out)
    _become_init(namespaces)
    _preload(setup)
    report = {"pid": os.getpid(), "namespaces": namespaces, "bound": [], "work_dir": None}
    if namespaces:
        import socket

        socket.sethostname("sandbox")
        report["network_interfaces"] = [name for _, name in socket.if_nameindex()]
        dirs = sandbox_view.python_trees(setup["python_dirs"], setup["project_root"])
        report["bound"], report["work_dir"] = sandbox_view.build_and_enter(dirs)
    return report


def main() -> None:
    project_root, setup = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, project_root)
    setup["project_root"] = os.path.realpath(project_root)
    control_in, control_out = sys.stdin.buffer, sys.stdout.buffer
    try:
        report = _setup(setup, control_in, control_out)
    except Exception as error:  # reported to the host, which raises SandboxUnavailable with it
        control_out.write(b"FAILED " + json.dumps(f"{type(error).__name__}: {error}").encode() + b"\n")
        control_out.flush()
        os._exit(4)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # nobody reads our stderr from here on; a full pipe must never block us
    control_out.write(b"READY " + json.dumps(report).encode() + b"\n")
    control_out.flush()
    from evaluation.sandbox_child import run_job

    for line in control_in:
        reply = run_job(json.loads(line), setup["namespaces"], report["work_dir"])
        control_out.write(json.dumps(reply).encode() + b"\n")
        control_out.flush()


if __name__ == "__main__":
    main()
