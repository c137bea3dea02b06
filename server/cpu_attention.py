"""Paged attention on CPU through a C++ operator that reads the KV cache in place (server/csrc/paged_attention.cpp).

`paged_attention_cpu` has exactly the signature and semantics of `server.attention.paged_attention` (the pure-torch
reference, which gathers every block with index_select before attending). The operator is compiled on first use with
torch.utils.cpp_extension (-O3 -march=native: the building machine's ISA, nothing hard-coded) into a persistent cache
directory, `$RHO_SERVE_CACHE/ext` or `~/.cache/rho-serve/ext`, one folder per (sources, torch version, CPU flags,
compiler); later processes load the built library in well under a second. Without a compiler, when the build fails, or
with RHO_SERVE_DISABLE_CPP=1, every call takes the pure-torch path, and the log says so once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from server.attention import AttentionMetadata, paged_attention

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (CSRC / "paged_attention.cpp", CSRC / "fused_ops.cpp",  # fused_ops: server/cpu_ops.py
           CSRC / "sampling_ops.cpp")  # sampling_ops: server/sampler.py
HEADERS = (CSRC / "paged_attention_math.h",)
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-DNDEBUG")  # -fopenmp: at::parallel_for is OpenMP in torch's headers
DISABLE_ENV = "RHO_SERVE_DISABLE_CPP"
CACHE_ENV = "RHO_SERVE_CACHE"
_BUILT_MARKER = "built.ok"  # written after a complete build: a half-written .so of a concurrent build is never loaded


class _Loader:
    """Builds or loads the operator once per process; remembers the outcome (the op, or None for the torch path)."""

    def __init__(self) -> None:
        self.tried = False
        self.op: Callable[..., torch.Tensor] | None = None
        self._lock = threading.Lock()  # the engine thread and a benchmark or test may ask at once

    def get(self) -> Callable[..., torch.Tensor] | None:
        if not self.tried:
            with self._lock:
                if not self.tried:
                    self.op = _load_or_build()
                    self.tried = True
        return self.op


_LOADER = _Loader()


def available() -> bool:
    """True when the C++ operator is built and loaded (building it now if needed)."""
    return _LOADER.get() is not None


def paged_attention_cpu(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                        scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention of new tokens over their sequences' paged context, read in place.

    query (num_tokens, num_heads, head_dim) -> (num_tokens, num_heads, head_dim), as `paged_attention`. Float32 or
    bfloat16 caches on CPU go to the C++ operator; anything else (or no operator) to the pure-torch path.
    """
    op = _LOADER.get()
    if op is None or query.device.type != "cpu" or k_cache.dtype not in (torch.float32, torch.bfloat16):
        return paged_attention(query, k_cache, v_cache, meta, scale, sliding_window)
    q = query if query.dtype == torch.float32 else query.float()
    if q.stride(-1) != 1:
        q = q.contiguous()
    if "cpp_int32" not in meta.backend_cache:  # once per step, not per layer
        meta.backend_cache["cpp_int32"] = (_int32(meta.query_start_loc), _int32(meta.seq_lens),
                                           _int32(meta.block_tables))
    out = op(q, k_cache, v_cache, *meta.backend_cache["cpp_int32"],
             float(scale), -1 if sliding_window is None else int(sliding_window))
    return out if query.dtype == torch.float32 else out.to(query.dtype)


# Chunks with more new tokens than this go to the torch path: its SDPA runs them as MKL matrix products, which beat
# the operator's per-row loops for long prompt chunks (bench/attention_bench.py: 0.2x at 64 new tokens), while the
# operator wins 2.4-3.5x on decode rows.
MAX_OPERATOR_QUERY_LEN = 8


def paged_attention_mixed(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                          scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """The CPU default (`--attention cpp`): decode rows and short chunks through the operator, long prompt chunks
    through the torch path. Same signature and semantics as `paged_attention`."""
    short, long_ = _split(meta)
    if not long_:
        return paged_attention_cpu(query, k_cache, v_cache, meta, scale, sliding_window)
    if not short:
        return paged_attention(query, k_cache, v_cache, meta, scale, sliding_window)
    out = torch.empty_like(query)
    for part in (short, long_):
        rows, sub = part
        fn = paged_attention_cpu if part is short else paged_attention
        out.index_copy_(0, rows, fn(query.index_select(0, rows), k_cache, v_cache, sub, scale, sliding_window))
    return out


def _split(meta: AttentionMetadata):
    """(rows, sub-metadata) of the short-chunk sequences and of the long ones; when the step holds one kind only,
    True for it and None for the other (the caller then passes `meta` itself). Derived once per step and kept in
    meta.backend_cache for the other layers."""
    if "cpp_split" not in meta.backend_cache:
        short = [i for i, q in enumerate(meta.query_lens) if q <= MAX_OPERATOR_QUERY_LEN]
        long_ = [i for i, q in enumerate(meta.query_lens) if q > MAX_OPERATOR_QUERY_LEN]
        if not short or not long_:  # one kind only (most steps): the caller uses `meta` itself, no sub-metadata
            meta.backend_cache["cpp_split"] = (bool(short) or None, bool(long_) or None)
        else:
            meta.backend_cache["cpp_split"] = (_subset(meta, short), _subset(meta, long_))
    return meta.backend_cache["cpp_split"]


def _subset(meta: AttentionMetadata, seqs: list[int]):
    if not seqs:
        return None
    starts = meta.query_start_loc.tolist()
    rows = [r for i in seqs for r in range(starts[i], starts[i + 1])]
    index = torch.tensor(seqs, dtype=torch.int64)
    sub = AttentionMetadata.build([meta.query_lens[i] for i in seqs], [meta.seq_lens_list[i] for i in seqs],
                                  meta.slot_mapping[rows], meta.block_tables.index_select(0, index), "cpu")
    return torch.tensor(rows, dtype=torch.int64), sub


def _int32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int32).contiguous()  # no copy when already contiguous int32 (the metadata's own dtype)


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "rho-serve"


def build_key(compiler: str) -> str:
    """Hash of everything the built library depends on: its sources, the torch build, the CPU and the compiler."""
    h = hashlib.sha256()
    for path in SOURCES + HEADERS:
        h.update(path.read_bytes())
    h.update(torch.__version__.encode())
    h.update(" ".join(CFLAGS).encode())
    h.update(_cpu_flags().encode())
    h.update(compiler.encode())
    return h.hexdigest()[:16]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    """The compiler cpp_extension will use ($CXX or c++) with its version, or None when there is none."""
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        return None
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{path} {version.splitlines()[0] if version else ''}"


def _load_or_build() -> Callable[..., torch.Tensor] | None:
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        logger.info("C++ CPU attention disabled by %s: using the pure-torch paged attention", DISABLE_ENV)
        return None
    if _registered() is not None:  # another loader in this process (or a test) already loaded it
        return _registered()
    compiler = _compiler()
    if compiler is None:
        logger.warning("no C++ compiler found (%s): using the pure-torch paged attention", os.environ.get("CXX", "c++"))
        return None
    name = f"rho_serve_attention_{build_key(compiler)}"
    build_dir = cache_root() / "ext" / name
    library = build_dir / f"{name}.so"
    try:
        if (build_dir / _BUILT_MARKER).exists() and library.exists():
            torch.ops.load_library(str(library))
            logger.info("C++ CPU attention loaded from %s", library)
            return _registered()
        return _build(name, build_dir)
    except Exception as exc:  # a broken toolchain must not stop the server: the torch path is always there
        logger.warning("C++ CPU attention unavailable (%s: %s): using the pure-torch paged attention",
                       type(exc).__name__, str(exc).strip().splitlines()[-1] if str(exc).strip() else "")
        return None


def _build(name: str, build_dir: Path) -> Callable[..., torch.Tensor] | None:
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    logger.info("building the C++ CPU attention into %s (one-time, about a minute)", build_dir)
    start = time.perf_counter()
    # cpp_extension locks build_dir, so concurrent first uses build once; it loads the library into the process.
    cpp_extension.load(name=name, sources=[str(s) for s in SOURCES], build_directory=str(build_dir),
                       extra_cflags=list(CFLAGS), extra_ldflags=["-fopenmp"], extra_include_paths=[str(CSRC)],
                       is_python_module=False, verbose=False)
    (build_dir / _BUILT_MARKER).write_text(torch.__version__ + "\n")
    logger.info("C++ CPU attention built and loaded in %.1f s", time.perf_counter() - start)
    return _registered()


def _registered() -> Callable[..., torch.Tensor] | None:
    try:
        return torch.ops.rho_serve.paged_attention.default
    except (AttributeError, RuntimeError):
        return None
