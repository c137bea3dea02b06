"""The default number of torch intra-op threads on CPU: the CPUs this process may actually use.

torch's own default is the machine's physical core count, which ignores the CPU affinity mask (taskset, cpusets) and
the cgroup CPU quota of a container: a server limited to 2 CPUs on a 16-core host would run 16 OpenMP threads, and
an OpenMP barrier waiting on a descheduled thread stalls every op (measured here: with ~2x more runnable threads than
cores, a decode step ran 8x slower at 2 threads than at 1). So the default is min(affinity mask, ceil(quota)).

Measured on the 2-core development machine (shared, load 3-6) with the HTTP router in the same process, `rho-bench
serve --mode generate --threads N`, interleaved pairs, 2 threads over 1: 7.5M random Llama (192 requests) 1.63x,
1.08x, 0.91x; bundled model (64 requests) 0.94x, 1.13x. 2 threads is no worse (median 1.08x), so no core is held back
for the router (its HTTP and detokenisation fit between steps). Larger machines were not measured.
`--num-threads` (EngineConfig.num_threads) overrides it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

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
