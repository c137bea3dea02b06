"""Index builds in a child process that can be killed and whose memory is capped (issue #15: a Rust build cannot be
interrupted in a thread, and a timed-out one kept running and growing to gigabytes).

`BuildWorker` (parent side) starts `python -m grammars.build_worker`, which imports only outlines-core, caps its own
address space (RLIMIT_AS), builds the `Vocabulary` once from the token bytes it is sent, then answers one request at
a time: regex -> pickled `Index` (outlines-core's Index pickles through its own binary form). The parent waits with
a deadline and kills the process when it passes; a dead worker (killed, or out of memory: Rust aborts on a failed
allocation) is replaced by its owner. Requests are pickles; replies are length-prefixed pickles, read with
`select` so the deadline holds even in the middle of a large reply.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class BuildTimeout(Exception):
    """The build ran past its deadline; the worker was killed."""


class WorkerDied(Exception):
    """The worker exited during a build (most often: it hit its memory cap)."""


class BuildFailed(Exception):
    """outlines-core refused the regex (deterministic: the same regex fails again)."""


class BuildWorker:
    """One child process. Not thread-safe: its owner hands it to one build at a time."""

    def __init__(self, tokens: dict[int, bytes], eos_token_id: int, memory_limit_bytes: int | None):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grammars.build_worker", str(memory_limit_bytes or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, stderr=subprocess.DEVNULL, env=env, cwd=_PACKAGE_ROOT)
        self._write(pickle.dumps((tokens, eos_token_id), protocol=pickle.HIGHEST_PROTOCOL))
        self.ready = False  # set by the first reply: the vocabulary is built

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def build(self, regex: str, deadline: float):
        """regex -> outlines-core Index, or BuildTimeout (worker killed) / WorkerDied / BuildFailed."""
        try:
            self._write(pickle.dumps(regex, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._death()) from None
        self.wait_ready(deadline)
        status, payload = self._reply(deadline)
        if status == "error":
            raise BuildFailed(payload)
        return pickle.loads(payload)

    def wait_ready(self, deadline: float) -> None:
        """Wait for the child's first reply (its vocabulary is built); BuildTimeout kills it past the deadline."""
        if not self.ready:
            self._reply(deadline)
            self.ready = True

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered pipe may take part of a large write
            view = view[self.process.stdin.write(view):]

    def _reply(self, deadline: float):
        size = struct.unpack("<Q", self._read(8, deadline))[0]
        return pickle.loads(self._read(size, deadline))

    def _read(self, size: int, deadline: float) -> bytes:
        fd, chunks, got = self.process.stdout.fileno(), [], 0
        while got < size:
            readable, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not readable:
                self.kill()
                raise BuildTimeout()
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                raise WorkerDied(self._death())
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _death(self) -> str:
        code = self.process.wait()
        return f"the compiler process exited with status {code}"


def _serve(memory_limit_bytes: int) -> None:
    """Child main loop: cap memory, build the vocabulary, then regex -> ("ok", pickled Index) | ("error", text)."""
    if memory_limit_bytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    from outlines_core import Index

    from grammars.vocabulary import build_vocabulary

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    tokens, eos_token_id = pickle.load(stdin)
    vocabulary = build_vocabulary(tokens, eos_token_id)
    _send(stdout, ("ready", None))
    while True:
        try:
            regex = pickle.load(stdin)
        except EOFError:
            return
        try:
            reply = ("ok", pickle.dumps(Index(regex, vocabulary), protocol=pickle.HIGHEST_PROTOCOL))
        except MemoryError:
            reply = None  # exit: the parent reports the memory cap and starts a fresh worker
        except Exception as e:  # invalid regex, or one the vocabulary cannot spell
            reply = ("error", (str(e).strip().splitlines() or [type(e).__name__])[0])
        if reply is None:
            os._exit(3)
        _send(stdout, reply)


def _send(stdout, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stdout.write(struct.pack("<Q", len(data)) + data)
    stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
