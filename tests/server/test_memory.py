"""KV-pool sizing: the block arithmetic, the errors users see, and the warm-up prefill (run on CPU here; the CUDA
measurements around it run in bench/gpu.sh)."""
from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from server.config import ConfigError, EngineConfig  # noqa: E402
from server.loader import load_checkpoint  # noqa: E402
from server.attention import attention_backend  # noqa: E402
from server.memory import (GIB, MemoryProfile, bytes_per_block,  # noqa: E402
                           check_max_total_tokens, kv_pool_blocks, maximal_prefill, num_kv_blocks_from_memory)
from server.models.llama import ModelConfig  # noqa: E402

TINYLLAMA = ModelConfig(architecture="LlamaForCausalLM", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                        num_layers=22, num_heads=32, num_kv_heads=4, head_dim=64, rms_norm_eps=1e-5,
                        rope_theta=10000.0, rope_scaling=None, max_position_embeddings=2048,
                        tie_word_embeddings=False, sliding_window=None)


def test_bytes_per_block_tinyllama():
    # K and V x 22 layers x 16 tokens x 4 KV heads x 64 dims x 2 bytes (bf16) = 352 KiB.
    assert bytes_per_block(TINYLLAMA, 16, torch.bfloat16) == 2 * 22 * 16 * 4 * 64 * 2 == 360448
    assert bytes_per_block(TINYLLAMA, 32, torch.float32) == 4 * 360448


def test_pool_is_the_fraction_left_after_weights_context_and_activations():
    profile = MemoryProfile(total=100 * GIB, free=96 * GIB, weights=3 * GIB, peak_activations=2 * GIB)
    # 90 GiB allowed - 4 GiB in use - 2 GiB activations = 84 GiB of 1 MiB blocks.
    assert kv_pool_blocks(profile, 0.9, 1024 ** 2) == 84 * 1024
    # Another process holding 50 GiB leaves that much less.
    crowded = MemoryProfile(total=100 * GIB, free=46 * GIB, weights=3 * GIB, peak_activations=2 * GIB)
    assert kv_pool_blocks(crowded, 0.9, 1024 ** 2) == 34 * 1024


def test_no_room_is_a_clear_error():
    # 21.6 GiB allowed - 15 GiB in use - 7 GiB of activations < 0.
    profile = MemoryProfile(total=24 * GIB, free=9 * GIB, weights=14 * GIB, peak_activations=7 * GIB)
    with pytest.raises(ConfigError, match="does not fit.*--max-batch-prefill-tokens.*--cuda-memory-fraction"):
        kv_pool_blocks(profile, 0.9, 360448)


def test_max_total_tokens_must_fit_the_pool():
    check_max_total_tokens(num_blocks=128, block_size=16, max_total_tokens=2048)
    check_max_total_tokens(num_blocks=1, block_size=16, max_total_tokens=None)
    with pytest.raises(ConfigError, match="--max-total-tokens 4096 does not fit: the KV cache holds 2048 tokens"):
        check_max_total_tokens(num_blocks=128, block_size=16, max_total_tokens=4096)


@pytest.mark.parametrize("attention", ["torch", "triton"])
def test_maximal_prefill_runs_the_largest_step(tiny_llama_dir, attention):
    if attention == "triton":
        pytest.importorskip("triton")
    _, model = load_checkpoint(str(tiny_llama_dir), "float32", "cpu")
    cfg = EngineConfig(model_id=str(tiny_llama_dir), max_batch_prefill_tokens=300, max_total_tokens=128,
                       max_num_seqs=8)
    # Prompts of 128, 128 and 44 tokens: 8 + 8 + 3 blocks of 16 tokens in the scratch cache (float32).
    scratch = maximal_prefill(model, cfg, *attention_backend(attention, "cpu"))
    assert scratch == 19 * 16 * model.cfg.num_kv_heads * model.cfg.head_dim * 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="measures CUDA memory (bench/gpu.sh runs this)")
def test_pool_sizing_on_cuda(tiny_llama_dir):
    _, model = load_checkpoint(str(tiny_llama_dir), "bfloat16", "cuda")
    cfg = EngineConfig(model_id=str(tiny_llama_dir), max_batch_prefill_tokens=2048, cuda_memory_fraction=0.5)
    num_blocks = num_kv_blocks_from_memory(model, cfg, attention_backend("triton", "cuda"))
    free, total = torch.cuda.mem_get_info()
    pool = num_blocks * bytes_per_block(model.cfg, cfg.block_size, torch.bfloat16)
    assert 0 < pool <= 0.5 * total and pool <= free
    with pytest.raises(ConfigError, match="does not fit"):
        num_kv_blocks_from_memory(model, replace(cfg, cuda_memory_fraction=1e-6), attention_backend("triton", "cuda"))
    with pytest.raises(ConfigError, match="--max-total-tokens"):  # ten billion tokens fit in no GPU
        num_kv_blocks_from_memory(model, replace(cfg, max_total_tokens=10 ** 10), attention_backend("triton", "cuda"))
