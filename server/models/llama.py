"""Llama and Mistral on the paged KV cache: grouped-query attention, RoPE (default, linear, llama3 scaling),
tied or untied embeddings, Mistral's sliding window.

Tokens of all sequences of a step are flattened into one batch dimension (num_tokens, hidden): no padding. Weight
names follow Hugging Face's `LlamaForCausalLM`; q/k/v and gate/up are fused at load time (one matmul each).

On CPU in float32 the forward takes server/cpu_ops.py's fast path (decided at the first forward): fused C++ RMSNorm
with the residual add, rotary in place on the qkv rows, SiLU-and-mul, and column-major linear weights. Elsewhere, or
with the path disabled, the plain torch formulas below run; both agree to float32 rounding.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from server import cpu_ops
from server.attention import AttentionMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """The parts of a HF config.json the model needs."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    sliding_window: int | None
    attention_bias: bool = False
    mlp_bias: bool = False


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies (head_dim // 2,) with the configured scaling applied."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        inv_freq = _llama3_scaling(inv_freq, scaling)
    return inv_freq.float()


def _llama3_scaling(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    # Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth blend between.
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_len = s.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


class RotaryEmbedding(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        positions = torch.arange(cfg.max_position_embeddings, dtype=torch.float32)
        freqs = torch.outer(positions, rope_inv_freq(cfg))  # (max_pos, head_dim // 2)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)  # (max_pos, head_dim)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # q (T, heads, d), k (T, kv_heads, d); HF's rotate-half layout.
        cos = self.cos[positions].unsqueeze(1).to(q.dtype)
        sin = self.sin[positions].unsqueeze(1).to(q.dtype)
        return cpu_ops.rotary_reference(q, cos, sin), cpu_ops.rotary_reference(k, cos, sin)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_ops.rms_norm_reference(x, self.weight, self.eps)


AttentionFn = Callable[..., torch.Tensor]
WriteKVFn = Callable[..., None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size, self.kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=cfg.attention_bias)
        self.scale = self.head_dim ** -0.5
        self.sliding_window = cfg.sliding_window

    def forward(self, x, positions, rotary, kv_cache, meta, attn_fn: AttentionFn, write_fn: WriteKVFn,
                fused: bool = False):
        qkv = self.qkv_proj(x)  # (T, q_size + 2 * kv_size)
        if fused:  # q and k heads rotated in place in the qkv rows; the views below see the result
            cpu_ops.rotary_(qkv, positions, rotary.cos, rotary.sin, self.num_heads + self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if not fused:
            q, k = rotary(positions, q, k)
        k_cache, v_cache = kv_cache
        write_fn(k, v, k_cache, v_cache, meta.slot_mapping)
        out = attn_fn(q, k_cache, v_cache, meta, self.scale, self.sliding_window)  # (T, heads, d)
        return self.o_proj(out.reshape(-1, self.q_size))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.intermediate_size = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (T, 2 * intermediate)
        act = cpu_ops.silu_and_mul(gate_up) if fused else cpu_ops.silu_and_mul_reference(gate_up)
        return self.down_proj(act)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, rotary, kv_cache, meta, attn_fn, write_fn):
        x = x + self.self_attn(self.input_layernorm(x), positions, rotary, kv_cache, meta, attn_fn, write_fn)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_fused(self, h, residual, next_norm: RMSNorm, positions, rotary, kv_cache, meta, attn_fn, write_fn):
        """The same layer on the fast path. h: this layer's normalised input (T, hidden); residual (T, hidden) is
        updated in place (the running sum of the skip connections); returns next_norm(residual) for the next layer."""
        attn = self.self_attn(h, positions, rotary, kv_cache, meta, attn_fn, write_fn, fused=True)
        norm = self.post_attention_layernorm
        h = cpu_ops.add_rms_norm_(attn, residual, norm.weight, norm.eps)
        return cpu_ops.add_rms_norm_(self.mlp(h, fused=True), residual, next_norm.weight, next_norm.eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(cfg)
        self.fused: bool | None = None  # the CPU fast path; decided at the first forward, once weights are in place

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                meta: AttentionMetadata, attn_fn: AttentionFn, write_fn: WriteKVFn) -> torch.Tensor:
        """input_ids, positions (T,) -> final hidden states (T, hidden)."""
        if self.fused is None:
            self._choose_path()
        x = self.embed_tokens(input_ids)
        if self.fused:
            return self._forward_fused(x, positions, kv_caches, meta, attn_fn, write_fn)
        for layer, kv_cache in zip(self.layers, kv_caches):
            x = layer(x, positions, self.rotary, kv_cache, meta, attn_fn, write_fn)
        return self.norm(x)

    def _forward_fused(self, residual, positions, kv_caches, meta, attn_fn, write_fn) -> torch.Tensor:
        first = self.layers[0].input_layernorm
        h = cpu_ops.rms_norm(residual, first.weight, first.eps)
        norms = [layer.input_layernorm for layer in self.layers[1:]] + [self.norm]
        for layer, kv_cache, next_norm in zip(self.layers, kv_caches, norms):
            h = layer.forward_fused(h, residual, next_norm, positions, self.rotary, kv_cache, meta, attn_fn, write_fn)
        return h

    def _choose_path(self) -> None:
        weight = self.embed_tokens.weight
        self.fused = cpu_ops.enabled(weight.device, weight.dtype)
        if self.fused:
            logger.info("CPU linears: %s", cpu_ops.use_fast_linears(self))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(R, hidden) -> float32 logits (R, vocab)."""
        return self.lm_head(hidden).float()
