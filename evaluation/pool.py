"""A process pool with a per-item time limit, for grading (the harness uses pebble's `map(..., timeout=3)`).

An item that runs past the limit counts as a timeout and its worker is killed and replaced, so one pathological
sympy expression cannot stall the run. Workers are forked, so the parent's imports (sympy) are shared.
"""
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

TIMEOUT = object()  # marker returned for items that ran past the limit


def _serve(func: Callable[[Any], Any], conn: Connection) -> None:
    while True:
        item = conn.recv()
        if item is None:
            return
        try:
            conn.send((True, func(item)))
        except Exception as error:  # reported to the parent, which re-raises it
            conn.send((False, repr(error)))


class _Worker:
    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.conn, child = mp.get_context("fork").Pipe()
        self.process = mp.get_context("fork").Process(target=_serve, args=(func, child), daemon=True)
        self.process.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0

    def submit(self, index: int, item: Any) -> None:
        self.index, self.started = index, time.monotonic()
        self.conn.send(item)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.kill()


def timed_map(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    timeout_s: float,
    num_workers: int | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[Any]:
    """[func(item)] in order; TIMEOUT where an item took longer than timeout_s."""
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    num_workers = max(1, min(num_workers or os.cpu_count() or 1, len(items)))
    pending = list(range(len(items)))[::-1]  # popped from the end: lowest index first
    workers = [_Worker(func) for _ in range(num_workers)]
    try:
        for worker in workers:
            if pending:
                index = pending.pop()
                worker.submit(index, items[index])
        _drain(func, items, timeout_s, workers, pending, results, on_done)
    finally:
        for worker in workers:
            worker.close()
    return results


def _drain(func, items, timeout_s, workers, pending, results, on_done) -> None:
    while any(worker.index is not None for worker in workers):
        busy = [w for w in workers if w.index is not None]
        deadline = min(w.started for w in busy) + timeout_s
        ready = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
        for position, worker in enumerate(workers):
            if worker.index is None:
                continue
            if worker.conn in ready:
                ok, value = worker.conn.recv()
                if not ok:
                    raise RuntimeError(f"grading item {worker.index} failed: {value}")
                results[worker.index] = value
            elif time.monotonic() - worker.started >= timeout_s:
                results[worker.index] = TIMEOUT
                worker.kill()
                worker = workers[position] = _Worker(func)
            else:
                continue
            worker.index = None
            if on_done:
                on_done()
            if pending:
                index = pending.pop()
                worker.submit(index, items[index])
