"""The default number of torch intra-op threads on CPU: the CPUs this process may actually use.

torch's own default is the machine's physical core count, which ignores the CPU affinity mask (taskset, cpusets) and
the cgroup CPU quota of a container: a server limited to 2 CPUs on a 16-core host would run 16 OpenMP threads, and
an OpenMP barrier waiting on a descheduled thread stalls every op (measured here: with ~2x more runnable threads than
cores, a decode step ran 8x slower at 2 threads than at 1). So the default is min(affinity mask, ceil(quota)).

That count is the most a step uses: `StepThreads` runs small steps on one thread, so that the router in the same
process keeps a core (measured below).
`--num-threads` (EngineConfig.num_threads) overrides the count.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def default_num_threads() -> int:
    """CPUs usable by this process: its affinity mask, capped by the cgroup CPU quota when there is one."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_quota(v2: Path = CGROUP_V2_CPU_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                     v1_period: Path = CGROUP_V1_PERIOD) -> float | None:
    """The container's CPU limit in CPUs (e.g. 1.5), or None when unlimited or unknown."""
    try:
        if v2.exists():  # "max 100000" or "150000 100000"
            quota, _, period = v2.read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100000)
        if v1_quota.exists() and v1_period.exists():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None


# Steps whose work is below this many multiply-adds run on one thread (see StepThreads).
PARALLEL_STEP_MACS = 32_000_000


class StepThreads:
    """torch's intra-op thread count per engine step on CPU: one thread for small steps, `max_threads` otherwise.

    The router's event loop (HTTP, detokenization) runs in the same process and needs a core now and then. With two
    OpenMP threads a small step gains little from the second one, whose spin-waiting between ops takes the core the
    router needs; the router then waits for a time slice and every request's tokens with it. Measured on the 2-core
    machine, `rho-bench serve --mode generate --rounds 3`, median tok/s with 1 thread over 2: bundled 1M model 1.9x at
    4 concurrent, 1.7x at 8, 1.2x at 16, level at 32 (~38M multiply-adds a step); 7.5M random Llama 1.1x at 1
    concurrent (~8M), but 0.7x at 32 (~250M). Work is estimated as the linear layers' weights times the step's tokens
    plus the attention's query-key and value products over every sequence's context."""

    def __init__(self, max_threads: int, linear_macs_per_token: int, attention_macs_per_key: int):
        self.max_threads = max_threads
        self.linear_macs_per_token = linear_macs_per_token
        self.attention_macs_per_key = attention_macs_per_key
        # None: set on the first step, on the thread that runs the steps (OpenMP's thread count is per thread: the
        # engine's own thread does not inherit what the constructing thread set)
        self.current: int | None = None

    def threads_for(self, num_tokens: int, num_keys: int) -> int:
        """num_keys: the sum over the step's query tokens of the keys each attends to (an upper bound is fine)."""
        macs = num_tokens * self.linear_macs_per_token + num_keys * self.attention_macs_per_key
        return 1 if macs < PARALLEL_STEP_MACS else self.max_threads

    def apply(self, num_tokens: int, num_keys: int) -> None:
        threads = self.threads_for(num_tokens, num_keys)
        if threads != self.current:
            torch.set_num_threads(threads)
            self.current = threads
