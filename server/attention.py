"""Paged attention, pure-torch path: the reference implementation and the CPU default.

The KV cache of one layer is two tensors `(num_blocks, block_size, num_kv_heads, head_dim)`; a token's slot is
`block_id * block_size + offset`. Sequences read their context through their block tables. Decode rows (one new
token, or a few: the last token and its speculative drafts) are attended in batched gathers, groups of similar
length, short queries padded to the group's longest; prefill chunks (many new tokens over a possibly cached prefix)
one sequence at a time. Both use torch's scaled_dot_product_attention with grouped-query heads (`enable_gqa`), so
K/V are never repeated per query head.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


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
    # Derived once by `prepare()`: decode sequences in groups of similar length (less padding in the gather).
    decode_groups: list[DecodeGroup] | None = field(default=None)
    prefill_seqs: list[int] = field(default_factory=list)
    # Per-step values a backend derives once and reuses in every layer (server/cpu_attention.py's row split).
    backend_cache: dict = field(default_factory=dict)

    DECODE_GROUP_SIZE = 8
    MAX_DECODE_QUERY = 17  # longest query attended as a decode row (1 token + up to 16 speculative drafts)

    @classmethod
    def build(cls, query_lens: list[int], seq_lens: list[int], slot_mapping, block_tables, device,
              query_start_loc: torch.Tensor | None = None, device_seq_lens: torch.Tensor | None = None
              ) -> "AttentionMetadata":
        """The one constructor. Host lengths per sequence; slot_mapping (num_tokens,) and block_tables
        (num_seqs, max_blocks) as lists or tensors. CUDA graphs pass their static buffers as tensors (and their own
        query_start_loc / seq_lens, which differ from the host bounds they were captured with)."""
        def tensor(value, dtype):
            return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype, device=device)

        if query_start_loc is None:
            starts = [0]
            for n in query_lens:
                starts.append(starts[-1] + n)
            query_start_loc = tensor(starts, torch.int32)
        return cls(slot_mapping=tensor(slot_mapping, torch.int64), query_start_loc=query_start_loc,
                   seq_lens=device_seq_lens if device_seq_lens is not None else tensor(seq_lens, torch.int32),
                   block_tables=tensor(block_tables, torch.int32), max_query_len=max(query_lens),
                   max_seq_len=max(seq_lens), query_lens=list(query_lens), seq_lens_list=list(seq_lens))

    def prepare(self) -> "AttentionMetadata":
        starts = self.query_start_loc.tolist()
        q_lens, limit = self.query_lens, self.MAX_DECODE_QUERY
        # Single-token rows first, then multi-token ones, each by length: groups pad little.
        decode = sorted((i for i, q in enumerate(q_lens) if q <= limit),
                        key=lambda i: (q_lens[i] > 1, self.seq_lens_list[i]))
        self.prefill_seqs = [i for i, q in enumerate(q_lens) if q > limit]
        self.decode_groups = []
        for g in range(0, len(decode), self.DECODE_GROUP_SIZE):
            self.decode_groups.append(DecodeGroup.build(decode[g:g + self.DECODE_GROUP_SIZE], starts, q_lens,
                                                        self.seq_lens_list, self.slot_mapping.device))
        return self


@dataclass
class DecodeGroup:
    """Up to DECODE_GROUP_SIZE sequences attended in one gather. Each has q_len new rows (1, or 1 + its drafts),
    padded to the group's longest, q_max: rows (B * q_max,) are the token rows read (a padding slot repeats the
    sequence's last row), keep (B * q_max,) marks the real ones, and query_pos (B, q_max) their positions."""

    rows: torch.Tensor
    keep: torch.Tensor | None  # None: no padding (every q_len equal)
    seq_idx: torch.Tensor  # (B,) int64
    query_pos: torch.Tensor  # (B, q_max) int64
    q_max: int
    max_len: int

    @classmethod
    def build(cls, group: list[int], starts: list[int], q_lens: list[int], seq_lens: list[int], device
              ) -> "DecodeGroup":
        q_max = max(q_lens[i] for i in group)
        rows, keep, pos = [], [], []
        for i in group:
            n, end = q_lens[i], seq_lens[i]
            rows += [starts[i] + min(j, n - 1) for j in range(q_max)]
            keep += [j < n for j in range(q_max)]
            pos.append([end - n + min(j, n - 1) for j in range(q_max)])

        def tensor(values, dtype=torch.int64):
            return torch.tensor(values, dtype=dtype, device=device)

        return cls(tensor(rows), None if all(keep) else tensor(keep, torch.bool), tensor(group), tensor(pos),
                   q_max, max(seq_lens[i] for i in group))


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
    if meta.decode_groups is None:
        meta.prepare()
    out = torch.empty_like(query)
    for g in meta.decode_groups:
        got = _decode(query.index_select(0, g.rows), k_cache, v_cache, g, meta.block_tables[g.seq_idx], scale,
                      sliding_window)  # (B * q_max, num_heads, head_dim)
        if g.keep is None:
            out.index_copy_(0, g.rows, got)
        else:
            out.index_copy_(0, g.rows[g.keep], got[g.keep])
    starts = meta.query_start_loc
    for i in meta.prefill_seqs:
        lo, hi = int(starts[i]), int(starts[i + 1])
        out[lo:hi] = _prefill_one(query[lo:hi], k_cache, v_cache, meta.block_tables[i], meta.seq_lens_list[i],
                                  scale, sliding_window)
    return out


def _gather(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """Block ids (..., n) -> (..., n * block_size, num_kv_heads, head_dim). index_select on whole blocks is a
    memcpy per block, several times faster on CPU than advanced indexing."""
    num_blocks, block_size, num_kv_heads, head_dim = cache.shape
    flat = cache.view(num_blocks, -1).index_select(0, block_ids.flatten().long())
    return flat.view(*block_ids.shape[:-1], block_ids.shape[-1] * block_size, num_kv_heads, head_dim)


def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, group: DecodeGroup,
            block_tables: torch.Tensor, scale: float, sliding_window: int | None) -> torch.Tensor:
    # q (B * q_max, num_heads, head_dim): each sequence's new rows (padded), at positions group.query_pos (B, q_max).
    block_size = k_cache.shape[1]
    tables = block_tables[:, : -(-group.max_len // block_size)]
    k = _gather(k_cache, tables).transpose(1, 2)  # (B, kv_heads, L, head_dim), a strided view
    v = _gather(v_cache, tables).transpose(1, 2)
    key_pos = torch.arange(k.shape[2], device=q.device)
    query_pos = group.query_pos[:, :, None]  # (B, q_max, 1)
    invalid = key_pos[None, None, :] > query_pos  # (B, q_max, L): causal, and nothing past the sequence's end
    if sliding_window is not None:
        invalid |= key_pos[None, None, :] <= query_pos - sliding_window
    # An additive float mask keeps SDPA on its fast CPU kernel (a boolean mask is slower there).
    bias = torch.zeros(invalid.shape, dtype=q.dtype, device=q.device).masked_fill_(invalid, float("-inf"))
    num_seqs = group.seq_idx.shape[0]
    qh = q.view(num_seqs, group.q_max, *q.shape[1:]).transpose(1, 2)  # (B, num_heads, q_max, head_dim)
    out = F.scaled_dot_product_attention(qh, k.to(q.dtype), v.to(q.dtype), attn_mask=bias[:, None],
                                         scale=scale, enable_gqa=True)  # (B, num_heads, q_max, head_dim)
    return out.transpose(1, 2).reshape(q.shape)


def _prefill_one(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                 seq_len: int, scale: float, sliding_window: int | None) -> torch.Tensor:
    # q (q_len, num_heads, head_dim): the last q_len tokens of a sequence whose context is seq_len tokens long.
    block_size = k_cache.shape[1]
    q_len = q.shape[0]
    table = block_table[: -(-seq_len // block_size)]
    # A leading batch dim of 1: torch's CPU SDPA takes its flash kernel for 4-D inputs only (3-D ones run the math
    # path, which materialises the scores and masks: 1.4x slower on a 120-token prompt).
    k = _gather(k_cache, table)[:seq_len].transpose(0, 1).to(q.dtype)[None]  # (1, kv_heads, L, head_dim)
    v = _gather(v_cache, table)[:seq_len].transpose(0, 1).to(q.dtype)[None]
    qh = q.transpose(0, 1)[None]  # (1, num_heads, q_len, head_dim)
    if q_len == seq_len and sliding_window is None:  # a whole prompt: plain causal attention
        out = F.scaled_dot_product_attention(qh, k, v, is_causal=True, scale=scale, enable_gqa=True)
        return out[0].transpose(0, 1)
    q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)[:, None]
    k_pos = torch.arange(seq_len, device=q.device)[None, :]
    invalid = k_pos > q_pos  # (q_len, L): causal, offset by the cached prefix
    if sliding_window is not None:
        invalid |= k_pos <= q_pos - sliding_window
    bias = torch.zeros(invalid.shape, dtype=q.dtype, device=q.device).masked_fill_(invalid, float("-inf"))
    out = F.scaled_dot_product_attention(qh, k, v, attn_mask=bias[None, None], scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


def attention_backend(name: str, device: str):
    """(attention, write_kv) of the named implementation, looked up once by the engine. "cpp" is the C++ CPU
    operator for decode rows and short chunks (the torch path for the rest, and for everything when it cannot be
    built: it says so once in the log). Raises AttentionUnavailableError when the Triton path cannot run here."""
    if name == "cpp" and device == "cpu":
        from server.cpu_attention import available, paged_attention_mixed

        return (paged_attention_mixed if available() else paged_attention), write_kv
    if name != "triton":
        return paged_attention, write_kv
    try:
        from server.triton_attention import check_device, paged_attention_triton, write_kv_triton
    except ImportError as e:
        raise AttentionUnavailableError(str(e)) from None
    check_device(device)
    return paged_attention_triton, write_kv_triton


class AttentionUnavailableError(RuntimeError):
    """The asked-for attention implementation cannot run on this machine (the message says why)."""
