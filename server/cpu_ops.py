"""The Llama forward's CPU fast path: fused C++ elementwise ops and the weight layout that small-batch GEMMs like.

Fused ops (server/csrc/fused_ops.cpp, built into the same extension as the CPU attention by server/cpu_attention.py):
RMSNorm, residual add + RMSNorm, rotary in place on the fused qkv rows, SiLU-and-mul on the fused gate/up rows. Each
has its plain torch formula here (`*_reference`): the fallback, and what the tests hold the op to.

Linears: each float32 CPU nn.Linear first gets its weight re-laid column-major, i.e. as the transpose of a
contiguous (in, out) matrix (MKL's no-transpose GEMM: 1.3-2x faster than row-major at 1-32 rows; same values and
Parameter objects, no extra memory). Then `use_fast_linears` times, per weight shape, that against a `PackedLinear`:
the weight reordered once into oneDNN's blocked layout and multiplied by oneDNN's kernels (torch.ops.mkldnn, what
inductor's CPU freezing uses), at 1, 8 and 32 rows, and keeps the packed one where it is faster over the three. oneDNN
pays ~15 us per call more, so small weights stay with MKL (the bundled model's, except at 32 rows), but larger ones
run 1.4-2.8x faster at 6-32 rows (`rho-bench linear`, AMD EPYC, 2 threads: (6 x 256) @ (256 x 8000) 395 -> 140 us,
(32 x 256) @ (256 x 1376) 182 -> 126 us). A packed copy costs its weight's memory once more (the Parameter stays, so
tied embeddings and state_dict readers keep working). RHO_SERVE_DISABLE_ONEDNN=1: column-major weights only.

`enabled()` decides per model at its first forward: CPU, float32, the operator built, and RHO_SERVE_DISABLE_FAST unset
(RHO_SERVE_DISABLE_CPP=1 also turns the ops off, with the attention operator). Benchmarks set the variable to compare.
"""
from __future__ import annotations

import logging
import os
import time

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
    _log_once("CPU fast path on: fused RMSNorm/rotary/SiLU ops, linears: oneDNN prepacked where measured faster, "
              "else column-major weights" if ok else "CPU fast path off (no C++ operator): plain torch ops")
    return ok


def _log_once(message: str) -> None:
    if not _logged:
        _logged.append(True)
        logger.info(message)


ONEDNN_DISABLE_ENV = "RHO_SERVE_DISABLE_ONEDNN"


def onednn_available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and os.environ.get(ONEDNN_DISABLE_ENV, "") in ("", "0"))


class PackedLinear(nn.Module):
    """nn.Linear on CPU float32 through oneDNN with the weight prepacked once. x (..., in) -> (..., out)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: ties and state_dict readers see what they saw before
        self.bias = linear.bias
        weight = linear.weight.detach().contiguous()  # (out, in) row-major, whatever the Parameter's layout
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)  # opaque oneDNN tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _cpu_float32_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, nn.Linear) of every float32 CPU nn.Linear under model."""
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32]


def use_fast_linears(model: nn.Module, rows: tuple[int, ...] = (1, 8, 32)) -> str:
    """Column-major weights everywhere, then oneDNN packed linears for the weight shapes where they time faster at
    these row counts; returns what was done (for the log)."""
    use_column_major_weights(model)
    if not onednn_available():
        return "column-major linear weights"
    linears = _cpu_float32_linears(model)
    faster: dict[tuple[int, int, bool], bool] = {}  # per weight shape (timed once)
    for parent, name, child in linears:
        shape = (child.in_features, child.out_features, child.bias is not None)
        packed = PackedLinear(child) if faster.get(shape, True) else None
        if shape not in faster:
            faster[shape] = _time(packed, child.in_features, rows) < 0.9 * _time(child, child.in_features, rows)
        if faster[shape]:
            setattr(parent, name, packed)
    n_packed = sum(isinstance(c, PackedLinear) for c in model.modules())
    return f"oneDNN prepacked linears for {n_packed} of {len(linears)} (faster at {rows} rows), column-major weights"


@torch.inference_mode()
def _time(linear: nn.Module, in_features: int, rows: tuple[int, ...], calls: int = 8) -> float:
    """Seconds for `calls` calls at each row count, best of 3 rounds each (warm)."""
    total = 0.0
    for m in rows:
        x = torch.randn(m, in_features)
        linear(x)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(calls):
                linear(x)
            best = min(best, time.perf_counter() - start)
        total += best
    return total


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
