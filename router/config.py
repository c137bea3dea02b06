"""RouterConfig: every setting of the HTTP layer in one frozen dataclass (the engine's live in EngineConfig)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RouterConfig:
    hostname: str = "0.0.0.0"
    port: int = 3000
    max_concurrent_requests: int = 128  # in-flight requests beyond this get 429
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_input_tokens: int | None = None  # None: max_total_tokens - 1
    max_total_tokens: int | None = None  # None: the engine's limit
    max_client_batch_size: int = 4
    payload_limit: int = 2_000_000  # bytes of request body
    api_key: str | None = None  # None: no auth
    cors_allow_origin: tuple[str, ...] = ()  # empty: any origin
    scoring_route: str = "/score"
    watermark_gamma: float = 0.5
    watermark_delta: float = 2.0
    json_output: bool = False
    graceful_termination_timeout: float = 90.0  # seconds SIGTERM waits for in-flight requests
    keep_alive_s: float = 15.0  # SSE comment after this much silence
    compute_type: str | None = None  # x-compute-type header; None: "<cpu|gpu>+optimized" from the engine device
    disable_grammar_support: bool = False
    grammar_compile_timeout_s: float = 10.0  # a grammar still compiling after this gets a 422, not a hang
    wedge_timeout_s: float = 60.0  # /health fails when the engine has work and no step finished for this long
    chat_template: str | None = None  # a Jinja file overriding the model's chat template (OpenAI routes)

    def __post_init__(self) -> None:
        if not self.scoring_route.startswith("/"):
            raise ValueError(f"`scoring_route` must start with '/'. Given: {self.scoring_route}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["api_key"] = "***" if self.api_key else None  # never log the secret
        return data


@dataclass(frozen=True)
class Limits:
    """The limits validation enforces, resolved once the engine's capacity is known."""

    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int


def resolve_limits(config: RouterConfig, engine_max_total_tokens: int) -> Limits:
    """TGI's start-up consistency checks; raises ValueError with TGI's message."""
    max_total = config.max_total_tokens or engine_max_total_tokens
    if max_total > engine_max_total_tokens:
        raise ValueError(f"`max_total_tokens` must be <= the model's limit {engine_max_total_tokens}. "
                         f"Given: {max_total}")
    max_input = config.max_input_tokens if config.max_input_tokens is not None else max_total - 1
    if max_input >= max_total:
        raise ValueError("`max_input_tokens` must be < `max_total_tokens`")
    return Limits(max_input, max_total, config.max_best_of, config.max_stop_sequences, config.max_top_n_tokens)
