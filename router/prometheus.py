"""Prometheus metric primitives that expose names exactly as given, in the text format 0.0.4, as TGI's
metrics-exporter-prometheus does: a counter named `tgi_request_count` is sampled as `tgi_request_count` (no
`_total` suffix) and no metric has `*_created` samples. prometheus_client appends `_total` to every counter and adds
`_created` series, which would make every TGI dashboard query and alert on counters match nothing.

Counter, Gauge and Histogram keep the prometheus_client call style (`.labels(method=...).inc()`, `.observe(v)`,
`.set(v)`); all updates take one lock per metric, so the engine thread and the event loop can both record.
Label sets named in `initial` exist from the start with zero values (Prometheus practice: `rate()` and
`increase()` then see the first event instead of a series appearing from nothing).
"""
from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if value != int(value) or abs(value) >= 1e15 else str(int(value))


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    escape = lambda v: v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")  # noqa: E731
    parts = [f'{n}="{escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, registry: "Registry", name: str, doc: str, labelnames: Sequence[str] = (),
                 initial: Iterable[Sequence[str]] = ()):
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], object] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()
        for values in initial:
            self._child(tuple(values))
        registry.add(self)

    def labels(self, **labels: str):
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {tuple(labels)}")
        return self._child(tuple(str(labels[n]) for n in self.labelnames))

    def _child(self, values: tuple[str, ...]):
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = self._new_child()
            return child

    def _unlabelled(self):
        if self.labelnames:
            raise ValueError(f"{self.name} needs labels {self.labelnames}")
        return self._children[()]

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            children = sorted(self._children.items())
        for values, child in children:
            lines.extend(child.samples(self.name, self.labelnames, values))
        return lines


class _Value:
    def __init__(self):
        self.value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)

    def samples(self, name: str, labelnames, values) -> list[str]:
        return [f"{name}{_label_text(labelnames, values)} {_number(self.value)}"]


class Counter(_Metric):
    kind = "counter"

    def _new_child(self) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._unlabelled().inc(amount)


class Gauge(_Metric):
    kind = "gauge"

    def _new_child(self) -> _Value:
        return _Value()

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)


class _Buckets:
    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, count: int = 1) -> None:
        index = bisect.bisect_left(self.bounds, value)  # first bucket with value <= bound; len: +Inf
        with self._lock:
            self.counts[index] += count
            self.sum += value * count

    def samples(self, name: str, labelnames, values) -> list[str]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        lines, cumulative = [], 0
        for bound, n in zip((*self.bounds, math.inf), counts):
            cumulative += n
            le = f'le="{_number(bound)}"'
            lines.append(f"{name}_bucket{_label_text(labelnames, values, le)} {cumulative}")
        lines.append(f"{name}_sum{_label_text(labelnames, values)} {_number(total)}")
        lines.append(f"{name}_count{_label_text(labelnames, values)} {cumulative}")
        return lines


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, registry: "Registry", name: str, doc: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], initial: Iterable[Sequence[str]] = ()):
        self.buckets = tuple(sorted(float(b) for b in buckets))
        super().__init__(registry, name, doc, labelnames, initial)

    def _new_child(self) -> _Buckets:
        return _Buckets(self.buckets)

    def observe(self, value: float, count: int = 1) -> None:
        """`count` equal observations at once (e.g. one per generated token)."""
        self._unlabelled().observe(value, count)


class Registry:
    def __init__(self):
        self._metrics: dict[str, _Metric] = {}

    def add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"duplicate metric {metric.name}")
        self._metrics[metric.name] = metric

    def render(self) -> bytes:
        lines = [line for metric in self._metrics.values() for line in metric.render()]
        return ("\n".join(lines) + "\n").encode()
