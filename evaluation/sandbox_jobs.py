"""What one sandboxed child does once it is walled in: run a program, grade a pair, or report its own view.

Each function returns a JSON-ready dict that the child writes to its result pipe; the worker validates it, since
after a program has run this interpreter is the program's to rewrite. `run_program` follows the harness's
GenericRuntime: `exec` in a fresh globals dict, stdout captured, the answer expression evaluated for pal, any
failure (SystemExit included) reported as the last line of its traceback, both texts stripped and truncated.
"""
import io
import os
import pickle
import re
import resource
import socket
import traceback
from contextlib import redirect_stdout


def truncate(text: str, max_chars: int = 400) -> str:
    """The harness's truncation: first half + "..." + last half when longer than max_chars."""
    half = max_chars // 2
    return text[:half] + "..." + text[-half:] if len(text) > max_chars else text


def run_program(code: str, mode: str, truncate_chars: int) -> dict:
    namespace: dict = {}
    try:
        if re.search(r"(\s|^)?input\(", code):  # the harness refuses interactive programs
            raise RuntimeError()
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            exec(compile(code, "<program>", "exec"), namespace)
            value = buffer.getvalue() if mode == "stdout" else eval(mode, namespace)
        text, report = str(value), "Done"
        pickle.dumps(value)  # the harness's serialization check
    except BaseException:  # as the harness: any failure becomes its last traceback line
        text, report = "", traceback.format_exc().split("\n")[-2]
    return {"result": truncate(text.strip(), truncate_chars), "report": truncate(report.strip(), truncate_chars)}


def grade(prediction: str, reference: str) -> dict:
    from sympy.core.cache import clear_cache

    from evaluation.grade import math_equal  # imported by the worker before it entered the sandbox

    # sympy's function cache carries results from the items this worker graded before: cleared, each item is graded
    # from the same state, whatever ran before it. (minerva_math item 164 of rho-math-1b-interpreter,
    # -tan(4pi/9)+4cos(pi/18) vs -sqrt(3), is unequal graded alone, as stored, but once came out equal in a worker
    # that had graded other items; the cache is the state such a worker carries.)
    clear_cache()
    return {"equal": bool(math_equal(prediction, reference))}


def _try_inet_socket() -> str:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except OSError as error:
        return f"refused: {error}"
    return "allowed"


def probe() -> dict:
    """The child's own view of its walls, for `rho-eval sandbox-info` and the tests."""
    from evaluation import kernel

    limits = {name: resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[0]
              for name in ("AS", "CPU", "FSIZE", "NOFILE", "NPROC", "CORE")}  # fmt: skip
    return {
        "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "capabilities": kernel.effective_capabilities(), "no_new_privs": kernel.no_new_privs(),
        "seccomp_mode": kernel.seccomp_mode(), "hostname": socket.gethostname(),
        "inet_socket": _try_inet_socket(), "root_entries": sorted(os.listdir("/")),
        "cwd": os.getcwd(), "rlimits": limits, "environment": sorted(os.environ),
    }  # fmt: skip
