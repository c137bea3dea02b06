"""The CPU KV cache's memory: one anonymous mapping per cache tensor, on transparent huge pages where the kernel allows.

A decode step reads every running sequence's blocks, and the block allocator scatters them over the whole pool: with
4 KB pages each block of each layer costs TLB misses (the pool is hundreds of MB, the TLB reaches a few MB), which the
attention operator then waits on. 2 MB pages cover the pool with a few hundred entries. Linux's default
`transparent_hugepage=madvise` gives them only to mappings that ask (madvise MADV_HUGEPAGE), which torch's allocator
does not, so the pool is mapped here and wrapped as a tensor (zero-filled, as torch.zeros). Where the kernel has no
THP (or another OS), the mapping still works with normal pages. The pool is touched at start-up, as
torch.zeros touches it: its memory is resident (RSS) from the start, and no step pays the page faults.
"""
from __future__ import annotations

import math
import mmap

import torch

HUGE_PAGE = 2 << 20


def zeros_on_huge_pages(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zeroed, contiguous CPU tensor whose memory is a private anonymous mapping advised MADV_HUGEPAGE, starting on
    a 2 MB boundary. The tensor keeps the mapping alive (torch.frombuffer holds a reference to it)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize
    if nbytes == 0:
        return torch.zeros(shape, dtype=dtype)
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            region.madvise(advice)
        except OSError:  # THP compiled out or disabled: normal pages
            pass
    flat = torch.frombuffer(region, dtype=torch.uint8)
    offset = -flat.data_ptr() % HUGE_PAGE  # the first huge-page boundary inside the mapping
    # Touched now, as torch.zeros would: left to first use, the page faults (and the kernel's compaction for huge
    # pages) land in the steps that first write each block, ~10x a prefill's KV writes on a fresh pool.
    return flat[offset:offset + nbytes].zero_().view(dtype).view(shape)
