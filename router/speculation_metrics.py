"""Prometheus counters of speculative decoding, read from the engine's totals at scrape time.

`tgi_speculative_draft_tokens`: draft tokens the engine verified; `tgi_speculative_accepted_tokens`: those it kept
(their ratio is the acceptance rate). Named and exposed like the other TGI-style counters (no `_total` suffix:
router.prometheus). The engine keeps the totals, so nothing is recorded on the request path: each scrape renders the
values of one `EngineStats`.
"""
from __future__ import annotations

from collections.abc import Callable

from router.prometheus import Counter, Registry


class _StatsCounter(Counter):
    """A counter whose value is an engine total, read when the registry renders."""

    def __init__(self, registry: Registry, name: str, doc: str, read: Callable[[], float]):
        self._read = read
        super().__init__(registry, name, doc)

    def render(self) -> list[str]:
        self._unlabelled().set(self._read())
        return super().render()


def register_speculation_metrics(registry: Registry, stats: Callable[[], object]) -> None:
    """stats: () -> server.protocol.EngineStats (the engine client's `stats`)."""
    _StatsCounter(registry, "tgi_speculative_draft_tokens", "Draft tokens verified (--speculate)",
                  lambda: stats().num_draft_tokens_proposed_total)
    _StatsCounter(registry, "tgi_speculative_accepted_tokens", "Draft tokens accepted (--speculate)",
                  lambda: stats().num_draft_tokens_accepted_total)
