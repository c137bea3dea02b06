"""Builds a step's batch tensors from the scheduled chunks and runs one forward pass for the whole mixed batch.

Owns the model and the KV cache (one (k, v) pair of `(num_blocks, block_size, num_kv_heads, head_dim)` per layer).
Returns float32 logits only for the rows that need them: the last token of each chunk that completes its sequence
(to sample) and, with speculation, each of its draft tokens after it (to verify), and the prompt positions of
requests that asked for prompt logprobs (the sampler turns those into logprobs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from server.attention import AttentionMetadata
from server.cpu_memory import zeros_on_huge_pages
from server.loader import DTYPES
from server.models.llama import LlamaForCausalLM
from server.scheduler import ScheduledChunk
from server.sequence import Sequence


@dataclass(frozen=True)
class PromptRows:
    """Rows of this step whose logits score prompt tokens: rows [row, row + length) sit at positions
    [start, start + length) and score the prompt tokens at start + 1 ... start + length."""

    seq: Sequence
    row: int
    start: int
    length: int

    @property
    def targets(self) -> list[int]:
        return self.seq.token_ids[self.start + 1:self.start + 1 + self.length]


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # (num_tokens,) int64
    positions: torch.Tensor  # (num_tokens,) int64
    meta: AttentionMetadata
    sample_rows: list[int]  # rows of the last token (then its drafts) of each sampling chunk
    sample_seqs: list[Sequence]
    sample_drafts: list[list[int]]  # per sampling sequence: its draft ids (1 + len rows each)
    prompt_rows: list[PromptRows]


@dataclass
class StepOutput:
    logits: torch.Tensor  # (sum(1 + len(d) for d in drafts), vocab) float32: each sampling sequence's next-token
    seqs: list[Sequence]  # logits, then those after each of its drafts (rows of one sequence are consecutive)
    prompt_logits: list[tuple[PromptRows, torch.Tensor]]  # (rows, (rows.length, vocab) float32)
    drafts: list[list[int]]


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, kv_dtype: str, device: str,
                 attention: tuple, capturable: bool = False, cuda_graphs: tuple[int, ...] = (),
                 max_seq_len: int = 0):
        """attention: (attention, write_kv) from server.attention.attention_backend; capturable: whether they can be
        captured in CUDA graphs (the Triton path: the torch path reads device values on the host)."""
        self.model = model
        self.block_size = block_size
        self.device = device
        cfg = model.cfg
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        if device == "cpu":  # huge pages: decode reads blocks scattered over the whole pool (server/cpu_memory.py)
            zeros = lambda: zeros_on_huge_pages(shape, DTYPES[kv_dtype])  # noqa: E731
        else:
            zeros = lambda: torch.zeros(shape, dtype=DTYPES[kv_dtype], device=device)  # noqa: E731
        self.kv_caches = [(zeros(), zeros()) for _ in range(cfg.num_layers)]
        self.attn_fn, self.write_fn = attention
        self.graphs = None
        if capturable and device.startswith("cuda") and any(cuda_graphs):
            from server.cuda_graphs import DecodeGraphs

            self.graphs = DecodeGraphs(model, self.kv_caches, self.attn_fn, self.write_fn,
                                       [b for b in cuda_graphs if b > 0], max_seq_len, block_size, device).capture()

    def prepare(self, chunks: list[ScheduledChunk]) -> StepInputs:
        """Flatten the chunks into token-major tensors and attention metadata."""
        bs = self.block_size
        ids, positions, slots, seq_lens, q_lens = [], [], [], [], []
        sample_rows, sample_seqs, sample_drafts, prompt_rows = [], [], [], []
        for chunk in chunks:
            seq, start, n = chunk.seq, chunk.seq.num_computed_tokens, chunk.num_new_tokens
            row0 = len(ids)
            ids.extend(seq.token_ids[start:start + n - len(chunk.drafts)])
            ids.extend(chunk.drafts)
            positions.extend(range(start, start + n))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            seq_lens.append(start + n)
            q_lens.append(n)
            if chunk.samples:
                sample_rows.extend(range(row0 + n - 1 - len(chunk.drafts), row0 + n))
                sample_seqs.append(seq)
                sample_drafts.append(chunk.drafts)
            if seq.wants_prompt_logprobs:
                scored = min(start + n, seq.num_prompt_tokens - 1) - start  # the last prompt token scores nothing
                if scored > 0:
                    prompt_rows.append(PromptRows(seq, row0, start, scored))
        max_blocks = max(len(c.seq.block_table) for c in chunks)
        tables = [c.seq.block_table + [0] * (max_blocks - len(c.seq.block_table)) for c in chunks]
        dev = self.device
        meta = AttentionMetadata.build(q_lens, seq_lens, slots, tables, dev)  # the torch path prepares its groups
        return StepInputs(torch.tensor(ids, dtype=torch.int64, device=dev),
                          torch.tensor(positions, dtype=torch.int64, device=dev), meta, sample_rows, sample_seqs,
                          sample_drafts, prompt_rows)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Final hidden states (num_tokens, hidden)."""
        if self.graphs is not None and self.graphs.can_run(inputs.meta):
            return self.graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        return self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta, self.attn_fn, self.write_fn)

    @torch.inference_mode()
    def run(self, chunks: list[ScheduledChunk]) -> StepOutput:
        """One forward pass: the sampling sequences' logits and the prompt-logprob rows' logits."""
        inputs = self.prepare(chunks)
        hidden = self.forward(inputs)
        # The logits at position p score prompt token p + 1 (raw distribution: no penalties or warpers).
        prompt = [(r, self.model.compute_logits(hidden[r.row:r.row + r.length])) for r in inputs.prompt_rows]
        logits = self.model.compute_logits(hidden[inputs.sample_rows])
        return StepOutput(logits, inputs.sample_seqs, prompt, inputs.sample_drafts)
