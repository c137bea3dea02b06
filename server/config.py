"""EngineConfig: every setting of the engine, in one frozen, validated dataclass.

The router's CLI builds it from TGI-named flags; the engine reads nothing else. Logged once at start-up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "rho-math-tiny"


class ConfigError(ValueError):
    """An inconsistent or impossible engine setting (reported at start-up, before serving)."""


@dataclass(frozen=True)
class EngineConfig:
    model_id: str = str(DEFAULT_MODEL_DIR)
    dtype: str | None = None  # None: float32 on CPU, bfloat16 on CUDA
    device: str | None = None  # None: cuda when available, else cpu
    block_size: int = 16  # tokens per KV block
    max_batch_total_tokens: int | None = None  # KV pool size in tokens; None: derived (CPU) or from memory (CUDA)
    max_batch_prefill_tokens: int = 4096  # token budget of one forward pass (prefill chunks + decodes)
    max_num_seqs: int = 256  # running sequences at most
    max_total_tokens: int | None = None  # prompt + generated, per sequence; None: max_position_embeddings
    enable_prefix_caching: bool = True
    attention: str | None = None  # "torch" | "triton"; None: triton on CUDA, torch on CPU
    cuda_memory_fraction: float = 0.9
    cuda_graphs: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    watermark_gamma: float = 0.5
    watermark_delta: float = 2.0
    num_threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    speculate: int = 0  # n-gram speculation: most draft tokens verified per sequence and step; 0: off
    wedge_timeout_s: float = 60.0  # a step running longer than this marks the engine unhealthy

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"`block_size` must be a positive power of two. Given: {self.block_size}")
        if self.max_batch_prefill_tokens <= 0:
            raise ConfigError("`max_batch_prefill_tokens` must be strictly positive")
        if self.max_batch_total_tokens is not None and self.max_batch_total_tokens < self.block_size:
            raise ConfigError(f"`max_batch_total_tokens` must be at least one block ({self.block_size} tokens)")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"`dtype` must be float32, bfloat16 or float16. Given: {self.dtype}")
        if self.attention not in (None, "torch", "triton"):
            raise ConfigError(f"`attention` must be torch or triton. Given: {self.attention}")
        if not 0.0 < self.cuda_memory_fraction <= 1.0:
            raise ConfigError("`cuda_memory_fraction` must be in (0, 1]")
        if not 0 <= self.speculate <= 16:
            raise ConfigError(f"`speculate` must be between 0 and 16. Given: {self.speculate}")
        if not 0.0 < self.watermark_gamma < 1.0:
            raise ConfigError("`watermark_gamma` must be in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)
