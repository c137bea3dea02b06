"""torchrun plumbing: process group set-up (gloo on CPU, NCCL on CUDA) and the few collectives training needs.

Without torchrun (no RANK in the environment) every helper degrades to the single-process identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> Dist:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if "RANK" not in os.environ:
        return Dist(device=device)
    if not dist.is_initialized():  # several trainings in one process share the group (see teardown)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank()
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return Dist(rank, dist.get_world_size(), device)


def teardown() -> None:
    """Called once at process exit (cli.main): re-initialising a destroyed group under torchrun hangs."""
    if dist.is_available() and dist.is_initialized():
        # Every rank reaches this point before any tears its gloo pairs down: a rank that destroys the group while
        # its peer still has traffic in flight aborts in gloo's threads ("terminate called without an active
        # exception", exit -6).
        dist.barrier()
        dist.destroy_process_group()


def all_sum(d: Dist, x: torch.Tensor) -> torch.Tensor:
    if d.enabled:
        x = x.clone()
        dist.all_reduce(x)
    return x


def all_gather_rows(d: Dist, x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (rows, ...) tensor along dim 0, in rank order (all ranks have the same shape)."""
    if not d.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(d.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
