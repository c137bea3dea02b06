"""RouterState: what every route needs (engine client, config, validator, infer, metrics), built once per app."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from router.auth import make_auth_dependency
from router.config import Limits, RouterConfig, resolve_limits
from router.infer import Infer
from router.metrics import Metrics
from router.speculation_metrics import register_speculation_metrics
from router.validation import Validator

log = logging.getLogger("rho_serve.router")
VERSION = "3.3.6-dev0"  # TGI's router version string, which clients may check


@dataclass
class RouterState:
    client: object  # server.client.EngineClient
    config: RouterConfig
    tokenizer: object
    model_id: str
    limits: Limits
    validator: Validator
    infer: Infer
    metrics: Metrics
    require_auth: object
    vocab_size: int
    compute_type: str

    def info(self) -> dict:
        return {"model_id": self.model_id, "model_sha": None, "model_pipeline_tag": None,
                "max_concurrent_requests": self.config.max_concurrent_requests,
                "max_best_of": self.limits.max_best_of, "max_stop_sequences": self.limits.max_stop_sequences,
                "max_input_tokens": self.limits.max_input_tokens, "max_total_tokens": self.limits.max_total_tokens,
                "validation_workers": 2, "max_client_batch_size": self.config.max_client_batch_size,
                "router": "text-generation-router", "version": VERSION, "sha": None, "docker_label": None,
                "speculate": self.client.info.speculate}

    def is_healthy(self) -> bool:
        return self.health_problem() is None

    def health_problem(self) -> str | None:
        """Why /health answers 503, or None (server.client.EngineClient.health_problem)."""
        return self.client.health_problem(self.config.wedge_timeout_s)


def _grammar_compiler(client, config: RouterConfig):
    if config.disable_grammar_support:
        return None
    try:
        from grammars.compiler import GrammarCompiler
    except ImportError:  # grammar support not installed: requests with a grammar get TGI's message
        return None
    info = client.info
    return GrammarCompiler(client.tokenizer, info.vocab_size, info.eos_token_ids,
                           compile_timeout_s=config.grammar_compile_timeout_s)


def build_state(client, config: RouterConfig) -> RouterState:
    """client: a server.client.EngineClient (the router reads only its plain `info`, stats and methods)."""
    info, tokenizer = client.info, client.tokenizer
    limits = resolve_limits(config, info.max_total_tokens)
    metrics = Metrics(limits.max_input_tokens, limits.max_total_tokens)
    client.add_step_observer(metrics.observe_step)
    register_speculation_metrics(metrics.registry, client)
    validator = Validator(tokenizer, limits, info.vocab_size, info.model_id, _grammar_compiler(client, config))
    infer = Infer(client, tokenizer, config.max_concurrent_requests, metrics)
    return RouterState(client, config, tokenizer, info.model_id, limits, validator, infer, metrics,
                       make_auth_dependency(config.api_key), info.vocab_size,
                       config.compute_type or _compute_type(info.device))


def _compute_type(device: str) -> str:
    return ("gpu" if str(device).startswith("cuda") else "cpu") + "+optimized"  # TGI's router fallback format
