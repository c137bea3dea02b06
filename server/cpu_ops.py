"""The Llama forward's CPU fast path: fused C++ elementwise ops and the weight layout that small-batch GEMMs like.

Fused ops (server/csrc/fused_ops.cpp, built into the same extension as the CPU attention by server/cpu_attention.py):
RMSNorm, residual add + RMSNorm, rotary in place on the fused qkv rows, SiLU-and-mul on the fused gate/up rows. Each
has its plain torch formula here (`*_reference`): the fallback, and what the tests hold the op to.

Weight layout: with this torch's MKL, `F.linear(x, W)` at 1-32 rows runs 1.3-2x faster when W (out, in) is stored
column-major, i.e. as the transpose of a contiguous (in, out) matrix (the GEMM becomes a no-transpose one); at 128+
rows the two tie (NOTES.md, bench/step_profile.py). `use_column_major_weights` re-lays every float32 CPU linear weight
once, in place: same values, same shapes, same Parameter objects (tied embeddings stay tied), no extra memory.

`enabled()` decides per model at its first forward: CPU, float32, the operator built, and RHO_SERVE_DISABLE_FAST unset
(RHO_SERVE_DISABLE_CPP=1 also turns the ops off, with the attention operator). Benchmarks set the variable to compare.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

from server import cpu_attention

logger = logging.getLogger(__name__)

DISABLE_ENV = "RHO_SERVE_DISABLE_FAST"
_logged: list[bool] = []


def enabled(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a model on this device and dtype should take the fast path (builds the extension if needed)."""
    if device.type != "cpu" or dtype != torch.float32:
        return False
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        _log_once(f"CPU fast path disabled by {DISABLE_ENV}: plain torch ops, row-major weights")
        return False
    ok = cpu_attention.available() and hasattr(torch.ops.rho_serve, "silu_and_mul")
    _log_once("CPU fast path on: fused RMSNorm/rotary/SiLU ops, column-major linear weights" if ok else
              "CPU fast path off (no C++ operator): plain torch ops")
    return ok


def _log_once(message: str) -> None:
    if not _logged:
        _logged.append(True)
        logger.info(message)


def use_column_major_weights(model: nn.Module) -> None:
    """Store each float32 CPU nn.Linear weight (out, in) as the transpose of a contiguous (in, out) matrix."""
    for module in model.modules():
        w = module.weight if isinstance(module, nn.Linear) else None
        if w is not None and w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous():
            w.data = w.data.t().contiguous().t()  # .data: the Parameter object (and any tie to it) is kept


# ----- the plain torch formulas (reference and fallback) -----
def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (rows, hidden) -> x * rsqrt(mean(x^2) + eps) * weight, computed in float32 (Hugging Face's LlamaRMSNorm)."""
    dtype = x.dtype
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)


def silu_and_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """(rows, 2 * inter) [gate | up] -> (rows, inter) silu(gate) * up."""
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (tokens, heads, head_dim), cos/sin (tokens, 1, head_dim) -> x rotated (rotate-half layout)."""
    return x * cos + rotate_half(x) * sin


# ----- the fused ops (callers check `enabled` once per model, not per call) -----
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (rows, hidden) float32 -> normalised (rows, hidden)."""
    return torch.ops.rho_serve.rms_norm(x, weight, eps)


def add_rms_norm_(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """residual += x in place; returns rms_norm(residual). x, residual (rows, hidden) float32, residual contiguous."""
    return torch.ops.rho_serve.add_rms_norm_(x, residual, weight, eps)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """(rows, 2 * inter) -> (rows, inter), as silu_and_mul_reference."""
    return torch.ops.rho_serve.silu_and_mul(gate_up)


def rotary_(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_rotated_heads: int,
            head_dim: int) -> None:
    """Rotate, in place, the first num_rotated_heads heads (q heads then k heads) of each row of qkv (tokens, width)
    at its position; cos/sin (max_positions, head_dim) tables, positions (tokens,) int64."""
    torch.ops.rho_serve.rotary_(qkv, positions, cos, sin, num_rotated_heads, head_dim)
