"""Paged attention in Triton: the CUDA path (also runs on CPU under `TRITON_INTERPRET=1`, which is how it is tested).

Same contract as `server.attention` (the torch reference): the KV cache of one layer is two tensors
`(num_blocks, block_size, num_kv_heads, head_dim)`, a token's slot is `block_id * block_size + offset`, and the kernels
read the cache in place through each sequence's block table (no gather, no copy). Three kernels:

- `_write_kv_kernel`: one program per new token stores its keys and values into its slot (slot < 0: a padding row of
  a CUDA-graph batch, skipped).
- `_decode_kernel` (+ `_merge_kernel`): rows with one new token. A program owns one (sequence, KV head, context
  partition) and all query heads of that KV head's group at once, so each K/V tile is read once per group. Contexts
  longer than `PARTITION_SIZE` are split across programs and merged by their log-sum-exp (flash-decoding): batch-1
  decoding still fills the GPU.
- `_prefill_kernel`: rows of sequences with several new tokens (prompt chunks, possibly over a cached prefix after a
  prefix-cache hit or an earlier chunk). A program owns one (sequence, tile of queries, query head); causal and
  sliding-window masks are offset by the cached prefix.

Softmax is the online (streaming) form in float32 with base-2 exponentials; the scale is folded into log2(e).
Launch shapes depend only on host-side metadata (`max_seq_len`, `max_query_len`, `query_lens`), never on device
values, so a decode step can be captured in a CUDA graph.
"""
from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError as e:  # triton ships with CUDA builds of torch; CPU installs need `pip install triton`
    raise ImportError("attention=triton needs the `triton` package (pip install 'rho-serve[gpu]')") from e

from server.attention import AttentionMetadata, AttentionUnavailableError

PARTITION_SIZE = 256  # decode: context tokens per program before the context is split across programs
DECODE_BLOCK_N = 64  # decode: keys per inner-loop tile
PREFILL_BLOCK_M = 64  # prefill: queries per program
PREFILL_BLOCK_N = 64  # prefill: keys per inner-loop tile
MIN_DOT = 16  # tl.dot needs every dimension >= 16 on GPUs
LOG2E = math.log2(math.e)


class TritonUnavailableError(AttentionUnavailableError):
    """Triton attention was asked for where it cannot run (CPU tensors without TRITON_INTERPRET=1)."""


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(device: torch.device | str) -> None:
    """Raise a clear error when triton kernels cannot run on `device` (call once at start-up)."""
    if torch.device(device).type != "cuda" and not interpreting():
        raise TritonUnavailableError(
            f"attention=triton runs on CUDA; on {device} set TRITON_INTERPRET=1 (slow, for tests) "
            "or use attention=torch")


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:  # the interpreter multiplies 16-bit floats wrongly (numpy has no bfloat16): exact float32 instead
        r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        r = tl.dot(a, b, input_precision=PRECISION)
    return r


# ----------------------------------------------------------------------------------------------------- write_kv
@triton.jit
def _write_kv_kernel(key, value, k_cache, v_cache, slot_mapping,
                     stride_kt, stride_kh, stride_vt, stride_vh, stride_cs, stride_ch,
                     NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEADS_PAD: tl.constexpr,
                     DIM_PAD: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_mapping + t).to(tl.int64)
    if slot < 0:  # padding row of a CUDA-graph batch
        return
    h = tl.arange(0, HEADS_PAD)[:, None]
    d = tl.arange(0, DIM_PAD)[None, :]
    mask = (h < NUM_KV_HEADS) & (d < HEAD_DIM)
    dst = slot * stride_cs + h * stride_ch + d
    k = tl.load(key + t * stride_kt + h * stride_kh + d, mask=mask)
    tl.store(k_cache + dst, k.to(k_cache.dtype.element_ty), mask=mask)
    v = tl.load(value + t * stride_vt + h * stride_vh + d, mask=mask)
    tl.store(v_cache + dst, v.to(v_cache.dtype.element_ty), mask=mask)


def write_kv_triton(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """Store new keys/values (num_tokens, num_kv_heads, head_dim) into their cache slots (negative slot: skip)."""
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    _check_cache(k_cache, v_cache)
    assert key.stride(2) == 1 and value.stride(2) == 1, "key/value rows must be contiguous in head_dim"
    _write_kv_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1), k_cache.stride(1), k_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        DIM_PAD=triton.next_power_of_2(head_dim))


# ----------------------------------------------------------------------------------------------------- decode
@triton.jit
def _decode_kernel(out, tmp_out, tmp_m, tmp_l, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                   scale_log2, window, stride_qt, stride_qh, stride_ot, stride_oh, stride_bt,
                   stride_cb, stride_cs, stride_ch,
                   NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                   DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                   PARTITION: tl.constexpr, NUM_PARTITIONS: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)
    row = tl.load(query_start_loc + seq)
    seq_len = tl.load(seq_lens + seq)
    if tl.load(query_start_loc + seq + 1) - row != 1:  # not a decode row: the prefill kernel's
        return
    lo = 0
    if HAS_WINDOW:  # the query (position seq_len - 1) sees keys at positions > seq_len - 1 - window
        lo = tl.maximum(seq_len - window, 0)
    start = tl.maximum(part * PARTITION, lo)
    end = tl.minimum((part + 1) * PARTITION, seq_len)
    if start >= end:  # partition outside the context (or before the window); seq_len 0 marks a padding row
        return

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, DIM_PAD)
    heads = kv_head * GROUP + g  # (GROUP_PAD,) query heads reading this KV head
    mask_g = g < GROUP
    mask_d = d < HEAD_DIM
    q_ptrs = q + row * stride_qt + heads[:, None] * stride_qh + d[None, :]
    qg = tl.load(q_ptrs, mask=mask_g[:, None] & mask_d[None, :], other=0.0)  # (GROUP_PAD, DIM_PAD)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, DIM_PAD], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        mask_n = n < end
        block_ids = tl.load(block_tables + seq * stride_bt + n // BLOCK_SIZE, mask=mask_n, other=0).to(tl.int64)
        kv_off = block_ids * stride_cb + (n % BLOCK_SIZE) * stride_cs + kv_head * stride_ch  # (BLOCK_N,)
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_cache + kv_off[:, None] + d[None, :], mask=kv_mask, other=0.0)  # (BLOCK_N, DIM_PAD)
        v = tl.load(v_cache + kv_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        s = _dot(qg, tl.trans(k.to(qg.dtype)), PRECISION, UPCAST) * scale_log2  # (GROUP_PAD, BLOCK_N)
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile holds at least one key of [start, end)
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(qg.dtype), v.to(qg.dtype), PRECISION, UPCAST)
        m_i = m_new

    out_mask = mask_g[:, None] & mask_d[None, :]
    if NUM_PARTITIONS == 1:
        o_ptrs = out + row * stride_ot + heads[:, None] * stride_oh + d[None, :]
        tl.store(o_ptrs, (acc / l_i[:, None]).to(out.dtype.element_ty), mask=out_mask)
    else:  # partial results, merged by _merge_kernel; tmp_* are (num_seqs, NUM_HEADS, NUM_PARTITIONS[, DIM_PAD])
        stat = (seq * NUM_HEADS + heads) * NUM_PARTITIONS + part
        tl.store(tmp_m + stat, m_i, mask=mask_g)
        tl.store(tmp_l + stat, l_i, mask=mask_g)
        tl.store(tmp_out + stat[:, None] * DIM_PAD + d[None, :], acc, mask=out_mask)


@triton.jit
def _merge_kernel(out, tmp_out, tmp_m, tmp_l, seq_lens, query_start_loc, window, stride_ot, stride_oh,
                  NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, PARTITION: tl.constexpr,
                  NUM_PARTITIONS: tl.constexpr, PARTS_PAD: tl.constexpr, HAS_WINDOW: tl.constexpr):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    row = tl.load(query_start_loc + seq)
    seq_len = tl.load(seq_lens + seq)
    if (tl.load(query_start_loc + seq + 1) - row != 1) | (seq_len <= 0):
        return
    first = 0
    if HAS_WINDOW:
        first = tl.maximum(seq_len - window, 0) // PARTITION
    p = tl.arange(0, PARTS_PAD)
    d = tl.arange(0, DIM_PAD)
    mask_p = (p >= first) & (p < tl.cdiv(seq_len, PARTITION))  # exactly the partitions _decode_kernel wrote
    stat = (seq * NUM_HEADS + head) * NUM_PARTITIONS + p
    m = tl.load(tmp_m + stat, mask=mask_p, other=float("-inf"))
    l = tl.load(tmp_l + stat, mask=mask_p, other=0.0)
    acc = tl.load(tmp_out + stat[:, None] * DIM_PAD + d[None, :], mask=mask_p[:, None] & (d < HEAD_DIM)[None, :],
                  other=0.0)  # (PARTS_PAD, DIM_PAD)
    w = tl.exp2(m - tl.max(m, 0))  # (PARTS_PAD,), 0 for masked partitions
    o = tl.sum(acc * w[:, None], 0) / tl.sum(l * w, 0)
    tl.store(out + row * stride_ot + head * stride_oh + d, o.to(out.dtype.element_ty), mask=d < HEAD_DIM)


# ----------------------------------------------------------------------------------------------------- prefill
@triton.jit
def _prefill_kernel(out, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale_log2, window,
                    stride_qt, stride_qh, stride_ot, stride_oh, stride_bt, stride_cb, stride_cs, stride_ch,
                    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr,
                    PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    seq = tl.program_id(0)
    tile = tl.program_id(1)
    head = tl.program_id(2)
    row0 = tl.load(query_start_loc + seq)
    q_len = tl.load(query_start_loc + seq + 1) - row0
    if (q_len <= 1) | (tile * BLOCK_M >= q_len):  # decode rows are the decode kernel's; tile past this chunk
        return
    seq_len = tl.load(seq_lens + seq)
    kv_head = head // GROUP
    m_idx = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    pos = seq_len - q_len + m_idx  # (BLOCK_M,) positions of these queries: after the cached prefix
    mask_m = m_idx < q_len
    d = tl.arange(0, DIM_PAD)
    mask_d = d < HEAD_DIM
    q_ptrs = q + (row0 + m_idx)[:, None] * stride_qt + head * stride_qh + d[None, :]
    qt = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_M, DIM_PAD)

    hi = tl.minimum(seq_len, seq_len - q_len + (tile + 1) * BLOCK_M)  # causal: no key after the tile's last query
    lo = 0
    if HAS_WINDOW:  # the tile's first query sees keys from pos - window + 1 on
        lo = tl.maximum(seq_len - q_len + tile * BLOCK_M - window + 1, 0)
    # -1e30, not -inf: with a window a row can have no key in a whole tile, and exp2(-inf - -inf) is NaN.
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_PAD], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        mask_n = n < hi
        block_ids = tl.load(block_tables + seq * stride_bt + n // BLOCK_SIZE, mask=mask_n, other=0).to(tl.int64)
        kv_off = block_ids * stride_cb + (n % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_cache + kv_off[:, None] + d[None, :], mask=kv_mask, other=0.0)  # (BLOCK_N, DIM_PAD)
        v = tl.load(v_cache + kv_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        s = _dot(qt, tl.trans(k.to(qt.dtype)), PRECISION, UPCAST) * scale_log2  # (BLOCK_M, BLOCK_N)
        visible = mask_n[None, :] & (n[None, :] <= pos[:, None])
        if HAS_WINDOW:
            visible &= n[None, :] > pos[:, None] - window
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(qt.dtype), v.to(qt.dtype), PRECISION, UPCAST)
        m_i = m_new

    l_i = tl.where(l_i > 0, l_i, 1.0)  # only rows past the chunk (masked out below) can have no key
    o_ptrs = out + (row0 + m_idx)[:, None] * stride_ot + head * stride_oh + d[None, :]
    tl.store(o_ptrs, (acc / l_i[:, None]).to(out.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


# ----------------------------------------------------------------------------------------------------- wrappers
def paged_attention_triton(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           meta: AttentionMetadata, scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention of new tokens over their sequences' paged context; same contract as
    `server.attention.paged_attention`. query (num_tokens, num_heads, head_dim) -> same shape.

    Decode rows (query length 1) and prefill chunks (query length > 1) of one batch run as two launches on disjoint
    rows. What is launched depends only on the host lists of `meta` (CUDA-graph safe).
    """
    _check_cache(k_cache, v_cache)
    assert query.stride(2) == 1, "query rows must be contiguous in head_dim"
    num_heads, num_kv_heads = query.shape[1], k_cache.shape[2]
    assert num_heads % num_kv_heads == 0, f"{num_heads} query heads over {num_kv_heads} KV heads"
    out = torch.empty_like(query)
    if query.shape[0] == 0:
        return out
    if 1 in meta.query_lens:
        _decode(out, query, k_cache, v_cache, meta, scale, sliding_window)
    if meta.max_query_len > 1:
        _prefill(out, query, k_cache, v_cache, meta, scale, sliding_window)
    return out


def num_decode_partitions(max_seq_len: int) -> int:
    return max(1, triton.cdiv(max_seq_len, PARTITION_SIZE))


def _decode(out, query, k_cache, v_cache, meta: AttentionMetadata, scale: float, window: int | None) -> None:
    num_seqs = meta.seq_lens.shape[0]
    num_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // num_kv_heads
    dim_pad = max(MIN_DOT, triton.next_power_of_2(head_dim))
    num_parts = num_decode_partitions(meta.max_seq_len)
    if num_parts > 1:  # (num_seqs, num_heads, num_parts[, dim_pad]) float32 partial softmax states
        tmp_out = torch.empty((num_seqs, num_heads, num_parts, dim_pad), dtype=torch.float32, device=query.device)
        tmp_m = torch.empty((num_seqs, num_heads, num_parts), dtype=torch.float32, device=query.device)
        tmp_l = torch.empty_like(tmp_m)
    else:
        tmp_out = tmp_m = tmp_l = out  # unused: the kernel writes `out` directly
    _decode_kernel[(num_seqs, num_kv_heads, num_parts)](
        out, tmp_out, tmp_m, tmp_l, query, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc,
        scale * LOG2E, window or 0, query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        meta.block_tables.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_HEADS=num_heads, GROUP=group, GROUP_PAD=max(MIN_DOT, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        DIM_PAD=dim_pad, BLOCK_SIZE=block_size, BLOCK_N=DECODE_BLOCK_N, PARTITION=PARTITION_SIZE,
        NUM_PARTITIONS=num_parts, HAS_WINDOW=window is not None, PRECISION=_precision(query), UPCAST=_upcast(query))
    if num_parts > 1:
        _merge_kernel[(num_seqs, num_heads)](
            out, tmp_out, tmp_m, tmp_l, meta.seq_lens, meta.query_start_loc, window or 0, out.stride(0),
            out.stride(1), NUM_HEADS=num_heads, HEAD_DIM=head_dim, DIM_PAD=dim_pad, PARTITION=PARTITION_SIZE,
            NUM_PARTITIONS=num_parts, PARTS_PAD=triton.next_power_of_2(num_parts), HAS_WINDOW=window is not None)


def _prefill(out, query, k_cache, v_cache, meta: AttentionMetadata, scale: float, window: int | None) -> None:
    num_seqs = meta.seq_lens.shape[0]
    num_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    grid = (num_seqs, triton.cdiv(meta.max_query_len, PREFILL_BLOCK_M), num_heads)
    _prefill_kernel[grid](
        out, query, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, scale * LOG2E,
        window or 0, query.stride(0), query.stride(1), out.stride(0), out.stride(1), meta.block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, DIM_PAD=max(MIN_DOT, triton.next_power_of_2(head_dim)),
        BLOCK_SIZE=block_size, BLOCK_M=PREFILL_BLOCK_M, BLOCK_N=PREFILL_BLOCK_N, HAS_WINDOW=window is not None,
        PRECISION=_precision(query), UPCAST=_upcast(query))


def _precision(query: torch.Tensor) -> str:
    # float32 inputs: exact IEEE products (TF32 would cost ~1e-3 relative error); 16-bit inputs ignore this.
    return "ieee" if query.dtype == torch.float32 else "tf32"


def _upcast(query: torch.Tensor) -> bool:
    return interpreting() and query.dtype != torch.float32


def _check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    # The kernels address slot s of block b at b * stride(0) + s * stride(1): the cache must be dense per block.
    assert k_cache.is_contiguous() and v_cache.is_contiguous(), "KV cache tensors must be contiguous"
    if k_cache.device.type != "cuda" and not interpreting():
        check_device(k_cache.device)
