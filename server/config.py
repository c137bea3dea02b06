"""EngineConfig: every setting of the engine, in one frozen, validated dataclass; and `setting()`, the field
declaration both config dataclasses use.

Each field is the one source of its default, its launcher flag (TGI's name), environment variable, help text and
parser: router/cli.py generates the command line and the environment reading from the fields' metadata, and
`config_dict` generates what is logged at start-up. The engine reads nothing else.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "rho-math-tiny"


class ConfigError(ValueError):
    """An inconsistent or impossible setting (reported at start-up, before serving)."""


def setting(default: Any, help: str, *, flag: str | None = None, aliases: tuple[str, ...] = (),
            short: str | None = None, parse: Callable[[str], Any] | None = None, shown: str | None = None,
            invert: bool = False, extra_env: tuple[str, ...] = (), file_flag: str | None = None,
            secret: bool = False) -> Any:
    """A config field and its command line.

    flag: the launcher flag when it is not `--<field-name>`; its env var is the flag in UPPER_SNAKE.
    aliases: legacy flag names for the same setting (each with its env var); giving two of them is an error.
    short: a one-letter spelling of the flag. parse: str -> value (default: the field's type).
    shown: the default as `--help` words it (for None defaults resolved later). invert: a switch that turns a
    True-default field off (`--disable-x` for `enable_x`). extra_env: env vars holding the field's own value.
    file_flag: a flag (and env var) naming a file whose contents are the value. secret: masked when logged.
    """
    meta = dict(help=help, flag=flag, aliases=aliases, short=short, parse=parse, shown=shown, invert=invert,
                extra_env=extra_env, file_flag=file_flag, secret=secret)
    return field(default=default, metadata=meta)


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def env_name(flag: str) -> str:
    """`--max-total-tokens` -> `MAX_TOTAL_TOKENS` (TGI's launcher rule)."""
    return flag.lstrip("-").replace("-", "_").upper()


def shown_default(f) -> str:
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    default = f.default if f.default is not MISSING else f.default_factory()
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return str(default)


def config_dict(config) -> dict:
    """The resolved settings as logged at start-up; secrets masked."""
    data = asdict(config)
    for f in fields(config):
        if f.metadata.get("secret") and data[f.name]:
            data[f.name] = "***"
    return data


def parse_int_tuple(text: str) -> tuple[int, ...]:
    """`"1,2,4"` -> (1, 2, 4); `""` or `"0"` -> () (off)."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"must be comma-separated integers. Given: {text}") from None
    return () if sizes in ((), (0,)) else sizes


@dataclass(frozen=True)
class EngineConfig:
    model_id: str = setting(str(DEFAULT_MODEL_DIR), "Checkpoint folder (HF layout) to serve",
                            shown="the bundled models/rho-math-tiny")
    dtype: str | None = setting(None, "Weights and activations: float32, bfloat16 or float16",
                                shown="float32 on CPU, bfloat16 on CUDA")
    device: str | None = setting(None, "cpu or cuda", shown="cuda when available")
    block_size: int = setting(16, "Tokens per KV-cache block (a power of two)")
    max_batch_total_tokens: int | None = setting(
        None, "KV-cache size in tokens", shown="a fixed pool on CPU, from free memory on CUDA")
    max_batch_prefill_tokens: int = setting(4096, "Token budget of one forward pass (prefill chunks + decodes)")
    max_num_seqs: int = setting(256, "Most sequences running at once", flag="--max-batch-size")
    max_total_tokens: int | None = setting(
        None, "Prompt + generated tokens per request", shown="the model's context length")
    enable_prefix_caching: bool = setting(
        True, "Turn the prefix cache off (PREFIX_CACHING=0 does too)", flag="--disable-prefix-caching",
        invert=True, extra_env=("PREFIX_CACHING",), shown="on")
    attention: str | None = setting(None, "Attention kernels: cpp (CPU: a C++ operator built on first use, reading "
                                    "the paged cache in place), torch (the pure-torch reference) or triton (CUDA)",
                                    shown="triton on CUDA, cpp on CPU")
    cuda_memory_fraction: float = setting(0.9, "Fraction of GPU memory the engine may use")
    cuda_graphs: tuple[int, ...] = setting((1, 2, 4, 8, 16, 32), "Batch sizes to capture CUDA graphs for; 0 disables",
                                           parse=parse_int_tuple)
    watermark_gamma: float = setting(0.5, "Watermark green-list fraction (Kirchenbauer et al.)")
    watermark_delta: float = setting(2.0, "Watermark logit bias added to green tokens")
    num_threads: int | None = setting(None, "torch intra-op threads on CPU: the most one step uses (small steps "
                                      "run on one, leaving the router a core)",
                                      shown="the CPUs this process may use (affinity mask, cgroup quota)")
    kv_cache_dtype: str | None = setting(None, "KV cache dtype on CPU: float32 or bfloat16 (half the cache's memory "
                                         "and bandwidth, as llama.cpp's default f16 cache; attention then reads "
                                         "rounded keys and values, so logits move by ~1e-3)", shown="--dtype")
    speculate: int = setting(0, "N-gram speculation: draft tokens verified per sequence and step (0: off)")
    speculate_history: int = setting(65_536, "N-grams of finished outputs that greedy requests also draft from "
                                     "(15-17 MB when full; 0: each request drafts from its own text only, so no "
                                     "request's speed depends on another's output)")

    def __post_init__(self) -> None:
        """Each field's own range (cross-field launch rules: router.config.check_launch)."""
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"`block_size` must be a positive power of two. Given: {self.block_size}")
        if self.max_batch_prefill_tokens <= 0:
            raise ConfigError("`max_batch_prefill_tokens` must be strictly positive")
        if self.max_batch_total_tokens is not None and self.max_batch_total_tokens < self.block_size:
            raise ConfigError(f"`max_batch_total_tokens` must be at least one block ({self.block_size} tokens)")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"`dtype` must be float32, bfloat16 or float16. Given: {self.dtype}")
        if self.kv_cache_dtype not in (None, "float32", "bfloat16"):
            raise ConfigError(f"`kv_cache_dtype` must be float32 or bfloat16. Given: {self.kv_cache_dtype}")
        if self.attention not in (None, "cpp", "torch", "triton"):
            raise ConfigError(f"`attention` must be cpp, torch or triton. Given: {self.attention}")
        if not 0.0 < self.cuda_memory_fraction <= 1.0:
            raise ConfigError("`cuda_memory_fraction` must be in (0, 1]")
        if not 0 <= self.speculate <= 16:
            raise ConfigError(f"`speculate` must be between 0 and 16. Given: {self.speculate}")
        if self.speculate_history < 0:
            raise ConfigError(f"`speculate_history` must be 0 or more. Given: {self.speculate_history}")
        if not 0.0 < self.watermark_gamma < 1.0:
            raise ConfigError("`watermark_gamma` must be in (0, 1)")

    def to_dict(self) -> dict:
        return config_dict(self)
