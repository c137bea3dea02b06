"""Builds a step's batch tensors from the scheduled chunks and runs one forward pass for the whole mixed batch.

Owns the model, the KV cache (one (k, v) pair of `(num_blocks, block_size, num_kv_heads, head_dim)` per layer) and the
attention implementation. Returns float32 logits only for the rows that need them: the last token of each chunk that
completes its sequence (to sample), and every prompt position of requests that asked for prompt logprobs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from server.attention import AttentionMetadata, paged_attention, write_kv
from server.loader import DTYPES
from server.models.llama import LlamaForCausalLM
from server.scheduler import ScheduledChunk
from server.sequence import Sequence


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # (num_tokens,) int64
    positions: torch.Tensor  # (num_tokens,) int64
    meta: AttentionMetadata
    sample_rows: list[int]  # row of the last token of each sampling chunk
    sample_seqs: list[Sequence]
    prompt_rows: list[tuple[Sequence, int, int, int]]  # prompt-logprob chunks: (seq, row, position, length)


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, dtype: str, device: str,
                 attention: str = "torch", cuda_graphs: tuple[int, ...] = (), max_seq_len: int = 0):
        self.model = model
        self.block_size = block_size
        self.device = device
        cfg = model.cfg
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=DTYPES[dtype], device=device),
                           torch.zeros(shape, dtype=DTYPES[dtype], device=device)) for _ in range(cfg.num_layers)]
        self.attn_fn, self.write_fn = self._attention_impl(attention, device)
        self.graphs = None
        # Only the Triton path can be captured (the torch path reads device values on the host).
        if attention == "triton" and device.startswith("cuda") and any(cuda_graphs):
            from server.cuda_graphs import DecodeGraphs

            self.graphs = DecodeGraphs(model, self.kv_caches, self.attn_fn, self.write_fn,
                                       [b for b in cuda_graphs if b > 0], max_seq_len, block_size, device).capture()

    @staticmethod
    def _attention_impl(name: str, device: str):
        if name == "triton":
            from server.triton_attention import check_device, paged_attention_triton, write_kv_triton

            check_device(device)
            return paged_attention_triton, write_kv_triton
        return paged_attention, write_kv

    def prepare(self, chunks: list[ScheduledChunk]) -> StepInputs:
        """Flatten the chunks into token-major tensors and attention metadata."""
        bs = self.block_size
        ids, positions, slots, starts, seq_lens, q_lens = [], [], [], [0], [], []
        sample_rows, sample_seqs, prompt_rows = [], [], []
        for chunk in chunks:
            seq, start, n = chunk.seq, chunk.seq.num_computed_tokens, chunk.num_new_tokens
            row0 = len(ids)
            ids.extend(seq.token_ids[start:start + n])
            positions.extend(range(start, start + n))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            starts.append(starts[-1] + n)
            seq_lens.append(start + n)
            q_lens.append(n)
            if chunk.samples:
                sample_rows.append(row0 + n - 1)
                sample_seqs.append(seq)
            if seq.prompt_logprobs is not None and len(seq.prompt_logprobs) < seq.num_prompt_tokens:
                prompt_rows.append((seq, row0, start, n))
        max_blocks = max(len(c.seq.block_table) for c in chunks)
        tables = [c.seq.block_table + [0] * (max_blocks - len(c.seq.block_table)) for c in chunks]
        dev = self.device
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            query_start_loc=torch.tensor(starts, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=dev),
            max_query_len=max(q_lens), max_seq_len=max(seq_lens), query_lens=q_lens, seq_lens_list=seq_lens,
        ).prepare()
        return StepInputs(torch.tensor(ids, dtype=torch.int64, device=dev),
                          torch.tensor(positions, dtype=torch.int64, device=dev), meta, sample_rows, sample_seqs,
                          prompt_rows)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Final hidden states (num_tokens, hidden)."""
        if self.graphs is not None and self.graphs.can_run(inputs.meta):
            return self.graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        return self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta, self.attn_fn, self.write_fn)

    @torch.inference_mode()
    def run(self, chunks: list[ScheduledChunk]) -> tuple[torch.Tensor, list[Sequence]]:
        """One forward pass. Returns logits (num_sampling_seqs, vocab) and the sequences they belong to, in order;
        records prompt logprobs on the sequences that asked for them."""
        inputs = self.prepare(chunks)
        hidden = self.forward(inputs)
        for seq, row0, start, n in inputs.prompt_rows:
            self._record_prompt_logprobs(seq, hidden, row0, start, n)
        logits = self.model.compute_logits(hidden[inputs.sample_rows])
        return logits, inputs.sample_seqs

    def _record_prompt_logprobs(self, seq: Sequence, hidden: torch.Tensor, row0: int, start: int, n: int) -> None:
        # The logits at position p score prompt token p + 1 (raw distribution: no penalties or warpers).
        first = len(seq.prompt_logprobs) - 1  # next position whose successor is unscored
        end = min(start + n, seq.num_prompt_tokens - 1)
        if first < start or end <= first:
            return
        rows = hidden[row0 + first - start: row0 + end - start]
        logprobs = torch.log_softmax(self.model.compute_logits(rows), dim=-1)
        targets = torch.tensor(seq.token_ids[first + 1:end + 1], device=logprobs.device)
        seq.prompt_logprobs.extend(logprobs.gather(1, targets[:, None]).squeeze(1).tolist())
