"""Helpers for the sandbox tests: find processes living inside job namespaces, and a loopback listener."""
import os
import socket
import threading


def job_processes() -> set[int]:
    """Host pids of live processes three PID namespaces deep (host -> worker -> job): programs and their children."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as handle:
                status = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if len(status.get("NSpid", "").split()) >= 3 and status.get("State", "").split()[0] not in ("Z", "X"):
            found.add(int(pid))
    return found


def grade_servers() -> set[int]:
    """The reusable grading children (also three namespaces deep), which legitimately stay between calls."""
    from evaluation import sandbox

    return {pid for pid in job_processes() if _parent_is_worker_init(pid)} if sandbox._pools else set()


def _parent_is_worker_init(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            ppid = next(int(line.split()[1]) for line in handle if line.startswith("PPid:"))
        with open(f"/proc/{ppid}/status") as handle:
            return next(line for line in handle if line.startswith("NSpid:")).split()[-1] == "1"
    except (OSError, StopIteration):
        return False


class Listener:
    """A TCP listener on 127.0.0.1 that records whether anything connected."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(4)
        self.socket.settimeout(0.5)
        self.port = self.socket.getsockname()[1]
        self.accepted: list = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                self.accepted.append(self.socket.accept())
            except OSError:
                continue

    def close(self) -> list:
        self._stop = True
        self._thread.join()
        self.socket.close()
        return self.accepted
