"""`rho-serve` command line: TGI launcher flag names and environment variables -> (EngineConfig, RouterConfig).

Every flag also reads the environment variable of the same name in upper snake case (`--max-total-tokens` ->
`MAX_TOTAL_TOKENS`), as TGI's launcher does; a flag on the command line wins over the environment. Parsing has no
side effects, so tests call `parse_args(argv, env)` directly.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from router.config import RouterConfig
from server.config import DEFAULT_MODEL_DIR, ConfigError, EngineConfig


class CliError(ValueError):
    """A start-up configuration error: printed as one line, exit status 2, no traceback."""


# (flag, type, default, help); env var = flag without dashes, upper snake case
_FLAGS: list[tuple[str, type, object, str]] = [
    ("--model-id", str, None, "Checkpoint folder (HF layout) to serve. Default: the bundled models/rho-math-tiny"),
    ("--hostname", str, "0.0.0.0", "Address to listen on"),
    ("--port", int, 3000, "Port to listen on"),
    ("--max-concurrent-requests", int, 128, "In-flight requests allowed; more get 429 `Model is overloaded`"),
    ("--max-best-of", int, 2, "Largest `best_of` a request may ask for"),
    ("--max-stop-sequences", int, 4, "Most `stop` strings per request"),
    ("--max-top-n-tokens", int, 5, "Largest `top_n_tokens` a request may ask for"),
    ("--max-input-tokens", int, None, "Longest prompt in tokens. Default: max_total_tokens - 1"),
    ("--max-input-length", int, None, "Legacy name of --max-input-tokens (setting both is an error)"),
    ("--max-total-tokens", int, None, "Prompt + generated tokens per request. Default: the model's context length"),
    ("--max-client-batch-size", int, 4, "Most prompts in one /v1/completions request"),
    ("--max-batch-prefill-tokens", int, 4096, "Token budget of one forward pass (prefill chunks + decodes)"),
    ("--max-batch-total-tokens", int, None, "KV-cache size in tokens. Default: derived from memory"),
    ("--max-batch-size", int, 256, "Most sequences running at once"),
    ("--dtype", str, None, "float32, bfloat16 or float16. Default: float32 on CPU, bfloat16 on CUDA"),
    ("--device", str, None, "cpu or cuda. Default: cuda when available"),
    ("--block-size", int, 16, "Tokens per KV-cache block (a power of two)"),
    ("--attention", str, None, "Attention kernels: torch or triton. Default: triton on CUDA, torch on CPU"),
    ("--cuda-memory-fraction", float, 0.9, "Fraction of GPU memory the engine may use"),
    ("--cuda-graphs", str, "1,2,4,8,16,32", "Batch sizes to capture CUDA graphs for; 0 disables"),
    ("--num-threads", int, None, "torch intra-op threads on CPU. Default: torch's choice"),
    ("--speculate", int, 0, "N-gram speculation: draft tokens verified per sequence and step (0: off)"),
    ("--watermark-gamma", float, 0.5, "Watermark green-list fraction (Kirchenbauer et al.)"),
    ("--watermark-delta", float, 2.0, "Watermark logit bias added to green tokens"),
    ("--api-key", str, None, "Require `Authorization: Bearer <key>` on generation routes"),
    ("--api-key-file", str, None, "Read the API key from this file (a mounted secret)"),
    ("--cors-allow-origin", str, None, "Comma-separated allowed CORS origins. Default: any"),
    ("--payload-limit", int, 2_000_000, "Largest request body in bytes (413 beyond)"),
    ("--scoring-route", str, "/score", "Path of the AzureML-style scoring route"),
    ("--graceful-termination-timeout", float, 90.0, "Seconds SIGTERM waits for in-flight requests to finish"),
    ("--chat-template", str, None, "Jinja chat-template file overriding the model's (OpenAI chat route)"),
    ("--grammar-compile-timeout", float, 10.0, "Seconds a grammar may take to compile before the request gets a 422"),
    ("--wedge-timeout", float, 60.0, "Seconds without an engine step (while it has work) before /health fails"),
]
_SWITCHES: list[tuple[str, str]] = [
    ("--json-output", "Log as JSON lines"),
    ("--disable-prefix-caching", "Turn the prefix cache off (also env PREFIX_CACHING=0)"),
    ("--disable-grammar-support", "Reject requests with a grammar"),
]


def env_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_").upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rho-serve", description="TGI-compatible text generation server. Every flag also reads the "
        "environment variable of the same name in upper snake case (e.g. MAX_TOTAL_TOKENS).")
    for flag, kind, default, text in _FLAGS:
        shown = f" [env {env_name(flag)}; default {default}]"
        parser.add_argument(flag, type=kind, default=None, help=text + shown)
    parser.add_argument("-g", dest="graceful_termination_timeout", type=float, help=argparse.SUPPRESS)
    for flag, text in _SWITCHES:
        parser.add_argument(flag, action="store_true", default=None, help=f"{text} [env {env_name(flag)}]")
    return parser


def _resolve(ns: argparse.Namespace, env: Mapping[str, str]) -> dict:
    """Flag > environment > default, converted to the flag's type."""
    values: dict = {}
    for flag, kind, default, _ in _FLAGS:
        key = flag.lstrip("-").replace("-", "_")
        raw = getattr(ns, key)
        if raw is None and env.get(env_name(flag)) not in (None, ""):
            try:
                raw = kind(env[env_name(flag)])
            except ValueError:
                raise CliError(f"environment variable {env_name(flag)}={env[env_name(flag)]!r} is not a valid "
                               f"{kind.__name__}") from None
        values[key] = default if raw is None else raw
    for flag, _ in _SWITCHES:
        key = flag.lstrip("-").replace("-", "_")
        on = getattr(ns, key) or env.get(env_name(flag), "").lower() in ("1", "true", "yes")
        values[key] = bool(on)
    if env.get("PREFIX_CACHING", "").lower() in ("0", "false", "no"):
        values["disable_prefix_caching"] = True
    return values


def _api_key(v: dict, env: Mapping[str, str]) -> str | None:
    if v["api_key"]:
        return v["api_key"]
    if v["api_key_file"]:
        path = Path(v["api_key_file"])
        if not path.is_file():
            raise CliError(f"--api-key-file {path} does not exist")
        key = path.read_text().strip()
        if not key:
            raise CliError(f"--api-key-file {path} is empty")
        return key
    return None


def _check(v: dict) -> None:
    """TGI's start-up consistency checks (messages as TGI's router prints them)."""
    if v["max_input_tokens"] is not None and v["max_input_length"] is not None:
        raise CliError("`max_input_tokens` and `max_input_length` are the same setting: pass only one")
    v["max_input_tokens"] = v["max_input_tokens"] if v["max_input_tokens"] is not None else v["max_input_length"]
    mit, mtt, mbt = v["max_input_tokens"], v["max_total_tokens"], v["max_batch_total_tokens"]
    if mit is not None and mtt is not None and mit >= mtt:
        raise CliError("`max_input_tokens` must be < `max_total_tokens`")
    if mbt is not None and v["max_batch_prefill_tokens"] > mbt:
        raise CliError("`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`")
    if mbt is not None and mtt is not None and mtt > mbt:
        raise CliError("`max_total_tokens` must be <= `max_batch_total_tokens`")
    if v["chat_template"] is not None and not Path(v["chat_template"]).is_file():
        raise CliError(f"--chat-template {v['chat_template']} is not a file")
    for key in ("max_concurrent_requests", "max_best_of", "payload_limit", "port"):
        if v[key] <= 0:
            raise CliError(f"`{key}` must be strictly positive. Given: {v[key]}")


def _model_id(v: dict) -> str:
    if v["model_id"]:
        return v["model_id"]
    if not DEFAULT_MODEL_DIR.is_dir():
        raise CliError(f"no --model-id given and the bundled model {DEFAULT_MODEL_DIR} does not exist yet; "
                       "pass a checkpoint folder with `--model-id /path/to/model` (or env MODEL_ID)")
    return str(DEFAULT_MODEL_DIR)


def _cuda_graphs(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CliError(f"--cuda-graphs must be comma-separated integers. Given: {text}") from None
    return () if sizes in ((), (0,)) else sizes


def parse_args(argv: list[str] | None = None,
               env: Mapping[str, str] | None = None) -> tuple[EngineConfig, RouterConfig]:
    import os
    env = os.environ if env is None else env
    v = _resolve(build_parser().parse_args(argv), env)
    _check(v)
    try:
        engine = EngineConfig(
            model_id=_model_id(v), dtype=v["dtype"], device=v["device"], block_size=v["block_size"],
            max_batch_total_tokens=v["max_batch_total_tokens"], max_batch_prefill_tokens=v["max_batch_prefill_tokens"],
            max_num_seqs=v["max_batch_size"], max_total_tokens=v["max_total_tokens"],
            enable_prefix_caching=not v["disable_prefix_caching"], attention=v["attention"],
            cuda_memory_fraction=v["cuda_memory_fraction"], cuda_graphs=_cuda_graphs(v["cuda_graphs"]),
            watermark_gamma=v["watermark_gamma"], watermark_delta=v["watermark_delta"],
            num_threads=v["num_threads"], speculate=v["speculate"], wedge_timeout_s=v["wedge_timeout"])
        router = RouterConfig(
            hostname=v["hostname"], port=v["port"], max_concurrent_requests=v["max_concurrent_requests"],
            max_best_of=v["max_best_of"], max_stop_sequences=v["max_stop_sequences"],
            max_top_n_tokens=v["max_top_n_tokens"], max_input_tokens=v["max_input_tokens"],
            max_total_tokens=v["max_total_tokens"], max_client_batch_size=v["max_client_batch_size"],
            payload_limit=v["payload_limit"], api_key=_api_key(v, env),
            cors_allow_origin=tuple(o.strip() for o in (v["cors_allow_origin"] or "").split(",") if o.strip()),
            scoring_route=v["scoring_route"], watermark_gamma=v["watermark_gamma"],
            watermark_delta=v["watermark_delta"], json_output=v["json_output"],
            graceful_termination_timeout=v["graceful_termination_timeout"],
            compute_type=env.get("COMPUTE_TYPE") or None,
            disable_grammar_support=v["disable_grammar_support"], wedge_timeout_s=v["wedge_timeout"],
            grammar_compile_timeout_s=v["grammar_compile_timeout"], chat_template=v["chat_template"])
    except (ConfigError, ValueError) as e:
        raise CliError(str(e)) from None
    return engine, router
