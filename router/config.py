"""RouterConfig: every setting of the HTTP layer in one frozen dataclass (the engine's live in EngineConfig), the
launch rules that tie settings together (`check_launch`), and the limits resolved against the engine (`resolve_limits`).

Fields are declared with `setting()` (server/config.py): default, TGI flag, env var and help text in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.config import ConfigError, EngineConfig, config_dict, setting


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


@dataclass(frozen=True)
class RouterConfig:
    hostname: str = setting("0.0.0.0", "Address to listen on")
    port: int = setting(3000, "Port to listen on")
    max_concurrent_requests: int = setting(128, "In-flight requests allowed; more get 429 `Model is overloaded`")
    max_best_of: int = setting(2, "Largest `best_of` a request may ask for")
    max_stop_sequences: int = setting(4, "Most `stop` strings per request")
    max_top_n_tokens: int = setting(5, "Largest `top_n_tokens` a request may ask for")
    max_input_tokens: int | None = setting(None, "Longest prompt in tokens", aliases=("--max-input-length",),
                                           shown="max_total_tokens - 1")
    # The same flag as EngineConfig.max_total_tokens (the CLI sets both); here it may only lower the engine's limit.
    max_total_tokens: int | None = setting(None, "Prompt + generated tokens per request",
                                           shown="the model's context length")
    max_client_batch_size: int = setting(4, "Most prompts in one /v1/completions request")
    payload_limit: int = setting(2_000_000, "Largest request body in bytes (413 beyond)")
    api_key: str | None = setting(None, "Require `Authorization: Bearer <key>` on generation routes",
                                  file_flag="--api-key-file", secret=True, shown="no authentication")
    cors_allow_origin: tuple[str, ...] = setting((), "Comma-separated allowed CORS origins", parse=_origins,
                                                 shown="any")
    scoring_route: str = setting("/score", "Path of the AzureML-style scoring route")
    json_output: bool = setting(False, "Log as JSON lines")
    graceful_termination_timeout: float = setting(90.0, "Seconds SIGTERM waits for in-flight requests to finish",
                                                  short="-g")
    keep_alive_s: float = setting(15.0, "Seconds of silence before a stream gets an SSE keep-alive comment",
                                  flag="--keep-alive")
    compute_type: str | None = setting(None, "Value of the x-compute-type response header",
                                       shown="<cpu|gpu>+optimized from the engine's device")
    disable_grammar_support: bool = setting(False, "Reject requests with a grammar")
    grammar_compile_timeout_s: float = setting(
        10.0, "Seconds a grammar may take to compile before the request gets a 422", flag="--grammar-compile-timeout")
    wedge_timeout_s: float = setting(60.0, "Seconds without an engine step (while it has work) before /health fails",
                                     flag="--wedge-timeout")
    chat_template: str | None = setting(None, "Jinja chat-template file overriding the model's (OpenAI chat route)",
                                        shown="the model's")

    def __post_init__(self) -> None:
        """Each field's own range (cross-field launch rules: check_launch)."""
        if not self.scoring_route.startswith("/"):
            raise ConfigError(f"`scoring_route` must start with '/'. Given: {self.scoring_route}")
        for key in ("max_concurrent_requests", "max_best_of", "payload_limit", "port"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"`{key}` must be strictly positive. Given: {getattr(self, key)}")
        if self.chat_template is not None and not Path(self.chat_template).is_file():
            raise ConfigError(f"--chat-template {self.chat_template} is not a file")

    def to_dict(self) -> dict:
        return config_dict(self)


def check_launch(engine: EngineConfig, router: RouterConfig) -> None:
    """TGI's start-up consistency rules across settings (messages as TGI's launcher prints them). The engine itself
    runs with a prefill budget or request limit beyond its KV pool (it chunks, or refuses the request)."""
    mbt = engine.max_batch_total_tokens
    _check_input_fits(router.max_input_tokens, router.max_total_tokens)
    if mbt is not None and engine.max_batch_prefill_tokens > mbt:
        raise ConfigError("`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`")
    if mbt is not None and engine.max_total_tokens is not None and engine.max_total_tokens > mbt:
        raise ConfigError("`max_total_tokens` must be <= `max_batch_total_tokens`")


def _check_input_fits(max_input: int | None, max_total: int | None) -> None:
    if max_input is not None and max_total is not None and max_input >= max_total:
        raise ConfigError("`max_input_tokens` must be < `max_total_tokens`")


@dataclass(frozen=True)
class Limits:
    """The limits validation enforces, resolved once the engine's capacity is known."""

    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int


def resolve_limits(config: RouterConfig, engine_max_total_tokens: int) -> Limits:
    """The one place None limits are resolved: against the engine's capacity. Raises ConfigError (a ValueError)."""
    max_total = config.max_total_tokens or engine_max_total_tokens
    if max_total > engine_max_total_tokens:
        raise ConfigError(f"`max_total_tokens` must be <= the model's limit {engine_max_total_tokens}. "
                          f"Given: {max_total}")
    max_input = config.max_input_tokens if config.max_input_tokens is not None else max_total - 1
    _check_input_fits(max_input, max_total)
    return Limits(max_input, max_total, config.max_best_of, config.max_stop_sequences, config.max_top_n_tokens)
