"""Decode steps replayed from CUDA graphs: one graph per captured batch size, a batch padded to the next size.

A decode step at small batch is dominated by kernel launches (about 15 per layer); replaying a captured graph issues
them all at once. Graphs read fixed addresses, so every graph reads its inputs from one set of static buffers (the
first `size` rows) and writes its hidden states to its own output tensor. Padding rows are inert: slot -1 makes
`write_kv_triton` skip them and seq_len 0 makes the decode kernel skip them, so they neither touch the KV cache nor
cost attention work. Launch shapes of the Triton path depend only on host metadata, fixed at capture: every row has
query length 1 and contexts are at most `max_seq_len` tokens (the decode kernel's partition count).

Only the Triton attention path is capturable (the torch path reads device values on the host). Capturing needs CUDA;
`stage` and `forward_static` (what is captured) run anywhere, which is how the padding is tested on CPU.
"""
from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable

import torch

from server.attention import AttentionMetadata

logger = logging.getLogger(__name__)


def padded_batch_size(num_seqs: int, sizes: list[int]) -> int | None:
    """Smallest captured size >= num_seqs (sizes sorted ascending); None when the batch is larger than all."""
    i = bisect.bisect_left(sizes, num_seqs)
    return sizes[i] if i < len(sizes) else None


class DecodeGraphs:
    """Captured decode forwards of `model` for each batch size in `batch_sizes`."""

    def __init__(self, model: Callable[..., torch.Tensor], kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 attn_fn: Callable, write_fn: Callable, batch_sizes: Iterable[int], max_seq_len: int,
                 block_size: int, device: str | torch.device):
        self.sizes = sorted({int(b) for b in batch_sizes})
        assert self.sizes and self.sizes[0] > 0, f"batch sizes must be positive: {batch_sizes}"
        self.model, self.kv_caches, self.attn_fn, self.write_fn = model, kv_caches, attn_fn, write_fn
        self.max_seq_len = max_seq_len
        max_bs, max_blocks = self.sizes[-1], -(-max_seq_len // block_size)
        # Static inputs shared by all graphs (a graph of size b reads rows [:b]); padding values by default.
        self.input_ids = torch.zeros(max_bs, dtype=torch.int64, device=device)
        self.positions = torch.zeros(max_bs, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((max_bs,), -1, dtype=torch.int64, device=device)
        self.seq_lens = torch.zeros(max_bs, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(max_bs, max_blocks, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(max_bs + 1, dtype=torch.int32, device=device)  # one query per row
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}  # (size, hidden) per graph

    def static_meta(self, size: int) -> AttentionMetadata:
        """Metadata over the static buffers' first `size` rows, as captured (host fields at their static bounds)."""
        return AttentionMetadata.build([1] * size, [self.max_seq_len] * size, self.slot_mapping[:size],
                                       self.block_tables[:size], self.slot_mapping.device,
                                       query_start_loc=self.query_start_loc[:size + 1],
                                       device_seq_lens=self.seq_lens[:size])

    def forward_static(self, size: int) -> torch.Tensor:
        """The captured computation: the model over the static buffers' first `size` rows -> (size, hidden)."""
        return self.model(self.input_ids[:size], self.positions[:size], self.kv_caches, self.static_meta(size),
                          self.attn_fn, self.write_fn)

    @torch.inference_mode()
    def capture(self) -> "DecodeGraphs":
        """Capture one graph per size, largest first so the smaller ones reuse its memory pool."""
        assert torch.cuda.is_available(), "CUDA graphs need a CUDA device"
        pool = None
        for size in reversed(self.sizes):
            self.forward_static(size)  # warm-up outside the capture: compiles the Triton kernels, sizes cuBLAS
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self.forward_static(size)
            pool = graph.pool() if pool is None else pool
            self.graphs[size] = graph
        torch.cuda.synchronize()
        logger.info("captured decode CUDA graphs for batch sizes %s (contexts up to %d tokens)", self.sizes,
                    self.max_seq_len)
        return self

    def can_run(self, meta: AttentionMetadata) -> bool:
        """Whether this step is a pure decode step that fits a captured graph."""
        return (meta.max_query_len == 1 and meta.max_seq_len <= self.max_seq_len
                and padded_batch_size(len(meta.query_lens), self.sizes) is not None
                and meta.block_tables.shape[1] <= self.block_tables.shape[1])

    def stage(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> int:
        """Copy a decode batch into the static buffers, padding rows up to the next captured size; returns it."""
        n = input_ids.shape[0]
        size = padded_batch_size(n, self.sizes)
        assert size is not None and n == len(meta.query_lens), "stage() needs can_run(meta)"
        width = meta.block_tables.shape[1]
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping)
        self.seq_lens[:n].copy_(meta.seq_lens)
        self.block_tables[:n, :width].copy_(meta.block_tables)  # columns past `width` are never read
        self.input_ids[n:size].zero_()
        self.positions[n:size].zero_()
        self.slot_mapping[n:size].fill_(-1)  # padding rows write no K/V ...
        self.seq_lens[n:size].zero_()  # ... and attend to nothing
        return size

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Replay the graph for this decode batch -> hidden states (num_seqs, hidden), a view valid until the next
        replay."""
        size = self.stage(input_ids, positions, meta)
        self.graphs[size].replay()
        return self.outputs[size][:input_ids.shape[0]]
