"""Paged attention, pure-torch path: the reference implementation and the CPU default.

The KV cache of one layer is two tensors `(num_blocks, block_size, num_kv_heads, head_dim)`; a token's slot is
`block_id * block_size + offset`. Sequences read their context through their block tables. Decode rows (one new token)
are attended in one batched gather; prefill chunks (several new tokens over a possibly cached prefix) one sequence at
a time. Grouped-query attention is computed by viewing the query heads as (num_kv_heads, group), never by copying K/V.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttentionMetadata:
    """Where each new token's K/V goes and what each sequence attends to. Built once per step, shared by all layers."""

    slot_mapping: torch.Tensor  # (num_tokens,) int64: cache slot of each new token
    query_start_loc: torch.Tensor  # (num_seqs + 1,) int32: cumulative new-token counts
    seq_lens: torch.Tensor  # (num_seqs,) int32: context length after this step (cached + new)
    block_tables: torch.Tensor  # (num_seqs, max_blocks_per_seq) int32, padded with 0
    max_query_len: int
    max_seq_len: int
    query_lens: list[int]  # host copies: the torch path loops over prefill sequences
    seq_lens_list: list[int]
    # Derived once by `prepare()`: decode sequences batched together.
    decode_seq_idx: torch.Tensor | None = field(default=None)  # (num_decode,) int64
    decode_rows: torch.Tensor | None = field(default=None)  # (num_decode,) int64: their query rows
    prefill_seqs: list[int] = field(default_factory=list)

    def prepare(self) -> "AttentionMetadata":
        starts = self.query_start_loc.tolist()
        decode = [i for i, q in enumerate(self.query_lens) if q == 1]
        self.prefill_seqs = [i for i, q in enumerate(self.query_lens) if q > 1]
        device = self.slot_mapping.device
        self.decode_seq_idx = torch.tensor(decode, dtype=torch.int64, device=device)
        self.decode_rows = torch.tensor([starts[i] for i in decode], dtype=torch.int64, device=device)
        return self


def write_kv(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store new keys/values (num_tokens, num_kv_heads, head_dim) into their cache slots."""
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, key.to(k_cache.dtype))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, value.to(v_cache.dtype))


def paged_attention(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                    scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention of new tokens over their sequences' cached context.

    query (num_tokens, num_heads, head_dim) -> (num_tokens, num_heads, head_dim). A query at position p sees keys at
    positions <= p, and with a sliding window W only those > p - W.
    """
    if meta.decode_seq_idx is None:
        meta.prepare()
    out = torch.empty_like(query)
    if meta.decode_rows.numel():
        out[meta.decode_rows] = _decode(query[meta.decode_rows], k_cache, v_cache, meta, scale, sliding_window)
    starts = meta.query_start_loc
    for i in meta.prefill_seqs:
        lo, hi = int(starts[i]), int(starts[i + 1])
        out[lo:hi] = _prefill_one(query[lo:hi], k_cache, v_cache, meta.block_tables[i], meta.seq_lens_list[i],
                                  scale, sliding_window)
    return out


def _gather(cache: torch.Tensor, block_table: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """(..., num_blocks) block ids -> (..., num_blocks * block_size, num_kv_heads, head_dim) contiguous context."""
    blocks = cache[block_table[..., :num_blocks].long()]  # (..., num_blocks, block_size, kv_heads, head_dim)
    return blocks.flatten(-4, -3)


def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
            sliding_window: int | None) -> torch.Tensor:
    # q (B, num_heads, head_dim): one new token per sequence, at position seq_len - 1.
    block_size, num_kv_heads, head_dim = k_cache.shape[1:]
    batch, num_heads = q.shape[0], q.shape[1]
    group = num_heads // num_kv_heads
    seq_lens = meta.seq_lens[meta.decode_seq_idx].long()  # (B,)
    max_len = max(meta.seq_lens_list[i] for i in meta.decode_seq_idx.tolist())
    num_blocks = -(-max_len // block_size)
    tables = meta.block_tables[meta.decode_seq_idx]
    k = _gather(k_cache, tables, num_blocks).permute(0, 2, 3, 1)  # (B, kv_heads, head_dim, L)
    v = _gather(v_cache, tables, num_blocks).transpose(1, 2)  # (B, kv_heads, L, head_dim)
    qg = q.view(batch, num_kv_heads, group, head_dim).to(k.dtype)
    scores = torch.matmul(qg, k).float() * scale  # (B, kv_heads, group, L)
    key_pos = torch.arange(k.shape[-1], device=q.device)
    invalid = key_pos[None, :] >= seq_lens[:, None]  # (B, L)
    if sliding_window is not None:
        invalid |= key_pos[None, :] <= (seq_lens[:, None] - 1 - sliding_window)
    scores.masked_fill_(invalid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v).reshape(batch, num_heads, head_dim).to(q.dtype)


def _prefill_one(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                 seq_len: int, scale: float, sliding_window: int | None) -> torch.Tensor:
    # q (q_len, num_heads, head_dim): the last q_len tokens of a sequence whose context is seq_len tokens long.
    block_size, num_kv_heads, head_dim = k_cache.shape[1:]
    q_len, num_heads = q.shape[0], q.shape[1]
    group = num_heads // num_kv_heads
    num_blocks = -(-seq_len // block_size)
    k = _gather(k_cache, block_table, num_blocks)[:seq_len].permute(1, 2, 0)  # (kv_heads, head_dim, L)
    v = _gather(v_cache, block_table, num_blocks)[:seq_len].transpose(0, 1)  # (kv_heads, L, head_dim)
    qg = q.view(q_len, num_kv_heads, group, head_dim).permute(1, 2, 0, 3).to(k.dtype)  # (kv_heads, group, q_len, d)
    scores = torch.matmul(qg, k.unsqueeze(1)).float() * scale  # (kv_heads, group, q_len, L)
    q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)[:, None]
    k_pos = torch.arange(seq_len, device=q.device)[None, :]
    invalid = k_pos > q_pos  # (q_len, L)
    if sliding_window is not None:
        invalid |= k_pos <= q_pos - sliding_window
    scores.masked_fill_(invalid, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.unsqueeze(1))  # (kv_heads, group, q_len, head_dim)
    return out.permute(2, 0, 1, 3).reshape(q_len, num_heads, head_dim).to(q.dtype)
