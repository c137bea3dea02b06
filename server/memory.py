"""KV-pool sizing on CUDA: how many KV blocks fit beside the model, measured rather than guessed.

After the weights are loaded, a warm-up runs the largest forward pass the scheduler can issue (a prefill of
`max_batch_prefill_tokens` tokens, then logits and a sort over `max_num_seqs` rows, as the sampler does) and records
torch's peak memory. Of the device's memory the engine may use `cuda_memory_fraction`; from that go what is already in
use (weights, CUDA context, other processes) and the warm-up's peak activations; the rest, in whole blocks, is the KV
pool. When nothing is left, or less than one `max_total_tokens` sequence, start-up stops with a `ConfigError` that
says which flag to change.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from server.attention import AttentionMetadata
from server.config import ConfigError, EngineConfig
from server.models.llama import LlamaForCausalLM, ModelConfig

logger = logging.getLogger(__name__)

GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryProfile:
    """Device memory after warm-up, in bytes."""

    total: int  # the device's memory
    free: int  # free after warm-up, with torch's cache emptied (weights, context and other processes excluded)
    weights: int  # torch tensors alive before warm-up: the model
    peak_activations: int  # warm-up peak above `weights`, minus the warm-up's own scratch KV cache


def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """K and V of `block_size` tokens in every layer."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * itemsize


def kv_pool_blocks(profile: MemoryProfile, fraction: float, block_bytes: int) -> int:
    """Blocks that fit in `fraction` of the device beside everything else; ConfigError when none do."""
    in_use = profile.total - profile.free  # weights + CUDA context + other processes
    budget = int(fraction * profile.total) - in_use - profile.peak_activations
    num_blocks = max(budget, 0) // block_bytes
    if num_blocks == 0:
        raise ConfigError(
            f"the model does not fit: {in_use / GIB:.2f} GiB in use after loading (weights {profile.weights / GIB:.2f} "
            f"GiB) plus {profile.peak_activations / GIB:.2f} GiB of activations for a maximal prefill exceed "
            f"cuda_memory_fraction={fraction} of {profile.total / GIB:.1f} GiB, leaving no room for the KV cache. "
            "Lower --max-batch-prefill-tokens, raise --cuda-memory-fraction, or use a smaller model or dtype")
    return num_blocks


def check_max_total_tokens(num_blocks: int, block_size: int, max_total_tokens: int | None) -> None:
    """One sequence of `max_total_tokens` (prompt + generated) must fit in the pool."""
    pool_tokens = num_blocks * block_size
    if max_total_tokens is not None and max_total_tokens > pool_tokens:
        raise ConfigError(
            f"--max-total-tokens {max_total_tokens} does not fit: the KV cache holds {pool_tokens} tokens in "
            f"{num_blocks} blocks of {block_size}. Lower --max-total-tokens or --max-batch-prefill-tokens, or raise "
            "--cuda-memory-fraction")


def maximal_prefill(model: LlamaForCausalLM, cfg: EngineConfig, attn_fn, write_fn) -> int:
    """Run the largest step the scheduler can issue into a scratch KV cache; returns the scratch cache's bytes.

    Prompts of at most `max_total_tokens` (or the model's context) tokens fill `max_batch_prefill_tokens`; every layer
    shares one scratch cache (its contents do not matter, only the activations' size).
    """
    mcfg, device = model.cfg, model.embed_tokens.weight.device
    dtype, bs = model.embed_tokens.weight.dtype, cfg.block_size
    num_tokens = cfg.max_batch_prefill_tokens
    seq_max = min(cfg.max_total_tokens or mcfg.max_position_embeddings, mcfg.max_position_embeddings, num_tokens)
    lens = [seq_max] * (num_tokens // seq_max) + ([num_tokens % seq_max] if num_tokens % seq_max else [])
    blocks = [-(-n // bs) for n in lens]
    cache = torch.zeros((sum(blocks), bs, mcfg.num_kv_heads, mcfg.head_dim), dtype=dtype, device=device)
    firsts = [sum(blocks[:i]) for i in range(len(lens))]
    slots = [f * bs + p for n, f in zip(lens, firsts) for p in range(n)]
    meta = AttentionMetadata.build(lens, lens, slots, [[f + j for j in range(max(blocks))] for f in firsts], device)
    ids = torch.randint(0, mcfg.vocab_size, (num_tokens,), device=device)
    positions = torch.cat([torch.arange(n) for n in lens]).to(device)
    with torch.inference_mode():
        hidden = model(ids, positions, [(cache, cache)] * mcfg.num_layers, meta, attn_fn, write_fn)
        rows = hidden[torch.arange(min(cfg.max_num_seqs, num_tokens), device=device) % num_tokens]
        logits = model.compute_logits(rows)  # (max_num_seqs, vocab) float32, as the sampler sees them
        torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True)  # top-p / top-k's sort
    return cache.numel() * cache.element_size()


def profile_memory(model: LlamaForCausalLM, cfg: EngineConfig, attn_fn, write_fn) -> MemoryProfile:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    weights = torch.cuda.memory_allocated()
    try:
        scratch = maximal_prefill(model, cfg, attn_fn, write_fn)
    except torch.OutOfMemoryError:
        raise ConfigError(f"out of GPU memory during warm-up with a prefill of {cfg.max_batch_prefill_tokens} tokens "
                          f"beside {weights / GIB:.2f} GiB of weights: lower --max-batch-prefill-tokens") from None
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - weights - scratch
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return MemoryProfile(total=total, free=free, weights=weights, peak_activations=max(peak, 0))


def num_kv_blocks_from_memory(model: LlamaForCausalLM, cfg: EngineConfig, attention: tuple) -> int:
    """KV blocks for the pool on CUDA (the engine calls this when --max-batch-total-tokens is not given).
    attention: (attention, write_kv) from server.attention.attention_backend."""
    attn_fn, write_fn = attention
    profile = profile_memory(model, cfg, attn_fn, write_fn)
    dtype = model.embed_tokens.weight.dtype
    block_bytes = bytes_per_block(model.cfg, cfg.block_size, dtype)
    num_blocks = kv_pool_blocks(profile, cfg.cuda_memory_fraction, block_bytes)
    check_max_total_tokens(num_blocks, cfg.block_size, cfg.max_total_tokens)
    logger.info("GPU memory: %.1f GiB total, %.2f GiB in use after loading, %.2f GiB peak activations; KV pool "
                "%d blocks x %d tokens (%.2f GiB) at cuda_memory_fraction=%s", profile.total / GIB,
                (profile.total - profile.free) / GIB, profile.peak_activations / GIB, num_blocks, cfg.block_size,
                num_blocks * block_bytes / GIB, cfg.cuda_memory_fraction)
    return num_blocks

