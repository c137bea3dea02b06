"""Prometheus counters of speculative decoding: `tgi_speculative_draft_tokens` (draft tokens the engine verified)
and `tgi_speculative_accepted_tokens` (those it kept; their ratio is the acceptance rate), exposed like the other
TGI-style counters (router.prometheus). Counted from the engine's step observer (`StepInfo.num_draft_tokens`,
`num_accepted_tokens`), on the engine thread: prometheus_client counters are thread-safe.
"""
from __future__ import annotations

from router.prometheus import Registry


def register_speculation_metrics(registry: Registry, client) -> None:
    """client: the engine client (`add_step_observer`)."""
    drafts = registry.counter("tgi_speculative_draft_tokens", "Draft tokens verified (--speculate)")
    accepted = registry.counter("tgi_speculative_accepted_tokens", "Draft tokens accepted (--speculate)")

    def observe(step) -> None:
        if step.num_draft_tokens:
            drafts.inc(step.num_draft_tokens)
            accepted.inc(step.num_accepted_tokens)

    client.add_step_observer(observe)
