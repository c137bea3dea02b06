"""A small pool of reusable build workers (`build_worker.BuildWorker`): at most `size` builds at once, each in its
own process, with its timeout counted from the moment it has a worker (waiting for a slot is bounded separately).

A worker whose build ran past its deadline is killed and replaced at once in the background, as is one that died
(memory cap), so the next build finds a warm worker: a bad grammar costs one worker for one timeout, never the
server. Workers start in the background when the pool is made; their start-up (Python + the vocabulary, ~0.25 s
at vocabulary 32k) is not charged to any build.
"""
from __future__ import annotations

import threading
import time
import weakref

from grammars.build_worker import BuildTimeout, BuildWorker, WorkerDied

STARTUP_TIMEOUT_S = 60.0  # a worker that is not ready by then (machine badly overloaded) is treated as dead


class PoolBusy(Exception):
    """No worker became free within the wait limit (every worker is busy with other builds)."""


class WorkerPool:
    def __init__(self, tokens: dict[int, bytes], eos_token_id: int, size: int = 2,
                 memory_limit_bytes: int | None = None):
        self._args = (tokens, eos_token_id, memory_limit_bytes)
        self._size = size
        self._slots = threading.Semaphore(size)
        self._idle: list[BuildWorker] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a worker became idle, or a start ended
        self._starting = 0  # background starts in flight: a build waits for one rather than starting its own
        self._closed = False
        self._all: set[BuildWorker] = set()  # for close(): idle, busy and starting workers
        weakref.finalize(self, _kill_all, self._all)
        for _ in range(size):
            self._start_in_background()

    def build(self, regex: str, timeout_s: float, wait_s: float):
        """regex -> outlines-core Index. Raises BuildTimeout, WorkerDied, BuildFailed or PoolBusy."""
        if not self._slots.acquire(timeout=wait_s):
            raise PoolBusy()
        try:
            worker = self._take()
            deadline = time.monotonic() + timeout_s  # the build's own clock starts here
            try:
                index = worker.build(regex, deadline)
            except (BuildTimeout, WorkerDied):
                self._discard(worker)
                self._start_in_background()
                raise
            except BaseException:
                self._give_back(worker)
                raise
            self._give_back(worker)
            return index
        finally:
            self._slots.release()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all if w.alive()]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        _kill_all(self._all)

    # ----- internals -----
    def _take(self) -> BuildWorker:
        """An idle ready worker, else a new one (waited for: start-up is not the build's time)."""
        with self._lock:
            while self._idle or self._starting:
                if not self._idle:
                    self._changed.wait()
                    continue
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._all.discard(worker)
        worker = self._new_worker()
        worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
        return worker

    def _new_worker(self) -> BuildWorker:
        worker = BuildWorker(*self._args)
        with self._lock:
            self._all.add(worker)
            if self._closed:
                self._all.discard(worker)
                worker.kill()
                raise WorkerDied("the grammar compiler is closed")
        return worker

    def _start_in_background(self) -> None:
        def start():
            worker = None
            try:
                worker = self._new_worker()
                worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
                self._give_back(worker)  # idle before the start counts as over: no build starts a second one
            except (WorkerDied, BuildTimeout, OSError):
                pass
            finally:
                with self._lock:
                    self._starting -= 1
                    self._changed.notify_all()

        with self._lock:
            self._starting += 1

        threading.Thread(target=start, daemon=True, name="grammar-worker-start").start()

    def _give_back(self, worker: BuildWorker) -> None:
        with self._lock:
            if not self._closed and worker.alive() and len(self._idle) < self._size:
                self._idle.append(worker)
                self._changed.notify_all()
                return
        self._discard(worker)

    def _discard(self, worker: BuildWorker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)


def _kill_all(workers: set[BuildWorker]) -> None:
    for worker in list(workers):
        worker.kill()
    workers.clear()
