"""The CPU KV pool's memory (server/cpu_memory.py): zeroed, contiguous, huge-page aligned, and alive as long as the
tensor is, whatever else the process allocates and frees."""
import gc

import pytest
import torch

from server.cpu_memory import HUGE_PAGE, zeros_on_huge_pages


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_zeroed_contiguous_aligned(dtype):
    t = zeros_on_huge_pages((3, 16, 2, 32), dtype)
    assert t.shape == (3, 16, 2, 32) and t.dtype == dtype and t.is_contiguous()
    assert t.data_ptr() % HUGE_PAGE == 0
    assert not t.any()


def test_memory_outlives_the_call_and_is_private():
    a = zeros_on_huge_pages((1024, 256), torch.float32)
    b = zeros_on_huge_pages((1024, 256), torch.float32)
    a.fill_(1.5)
    gc.collect()
    junk = [torch.randn(1 << 16) for _ in range(8)]  # reuse of freed memory would show up as changed values
    del junk
    gc.collect()
    assert torch.all(a == 1.5) and not b.any()
    view = a[10:20]
    del a
    gc.collect()
    assert torch.all(view == 1.5)  # a view keeps the mapping alive too


def test_empty_shape():
    assert zeros_on_huge_pages((0, 16, 2, 32), torch.float32).numel() == 0
