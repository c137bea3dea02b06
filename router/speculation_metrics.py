"""Prometheus counters of speculative decoding, read from the engine's totals at scrape time.

`tgi_speculative_draft_tokens_total`: draft tokens the engine verified; `tgi_speculative_accepted_tokens_total`: those
it kept (their ratio is the acceptance rate). A collector rather than Counters: the engine keeps the totals, so
nothing needs incrementing on the request path, and a scrape reads one consistent `EngineStats`.
"""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class SpeculationCollector(Collector):
    def __init__(self, stats: Callable[[], object]):
        self._stats = stats  # () -> server.protocol.EngineStats

    def collect(self):
        stats = self._stats()
        yield CounterMetricFamily("tgi_speculative_draft_tokens", "Draft tokens verified (--speculate)",
                                  value=stats.num_draft_tokens_proposed_total)
        yield CounterMetricFamily("tgi_speculative_accepted_tokens", "Draft tokens accepted (--speculate)",
                                  value=stats.num_draft_tokens_accepted_total)


def register_speculation_metrics(registry: CollectorRegistry, stats: Callable[[], object]) -> None:
    registry.register(SpeculationCollector(stats))
