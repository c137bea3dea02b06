"""TGI's metric names on top of prometheus_client: storage is prometheus_client's (thread-safe Counter, Gauge and
Histogram in a private CollectorRegistry), exposition is its `generate_latest` (text format 0.0.4), and this module
only re-emits each family with the names TGI's metrics-exporter-prometheus uses.

What prometheus_client does on its own, and why each is undone here:
- a Counter "tgi_request_count" is sampled as `tgi_request_count_total` (and "x_total" as `x_total`): the collector
  renames counter samples back to the name given, so TGI's dashboard queries and alerts match;
- every counter and histogram child has a `*_created` sample: the collector drops them (TGI has none;
  `disable_created_metrics()` would do it too, but for every prometheus_client user in the process);
- `generate_latest` writes the `# HELP`/`# TYPE` lines of any counter-typed family as `<name>_total`, whatever its
  samples are called (its Prometheus-from-OpenMetrics munging, exposition.py): `render` puts TGI's name back on
  those two lines of each counter;
- bucket bounds are labelled like Python floats (`le="1.0"`): whole bounds are written `le="1"`, as before;
- `generate_latest` sorts label names, so `le` comes first (`x_bucket{le="1",method="decode"}`): `render` moves it
  last on bucket lines, where TGI writes it (`x_bucket{method="decode",le="1"}`); text greps of TGI's series match.
  (Other labels stay sorted by name; every labelled TGI metric has one label.)
Sample values keep prometheus_client's formatting (`7.0`; Prometheus parses both).

Label sets named in `initial` exist from the start with zero values (Prometheus practice: `rate()` and
`increase()` then see the first event instead of a series appearing from nothing).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Registry", "Counter", "Gauge", "Histogram", "observe_many"]

# The `le` label inside a bucket line's label text, with the comma after it. Label values escape their quotes (\"),
# so `le="` can only start a label, never sit inside a value.
_LE_LABEL = re.compile(r'(?:^|(?<=,))le="[^"]*"(?:,|$)')


def _bound(le: str) -> str:
    """A bucket bound as prometheus_client writes it ("1.0", "0.25", "+Inf") -> whole numbers without ".0"."""
    value = float(le)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else le


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """`histogram.observe(amount)` `count` times, as one update of its sum and its bucket: prometheus_client has no
    bulk observe, and a request's per-token observations (~1 us each) were a tenth of the router's work for it. Uses
    the child's storage (`_sum`, `_buckets`, `_upper_bounds`: per-bucket counts, as `observe` keeps them); without
    it, the loop. tests/router/test_prometheus.py checks both give the same exposition."""
    if count <= 0:
        return
    buckets, bounds, total = (getattr(histogram, name, None) for name in ("_buckets", "_upper_bounds", "_sum"))
    observable = getattr(histogram, "_is_observable", lambda: False)()  # a labelled parent is not: observe raises
    if buckets is None or bounds is None or total is None or not observable:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    for bucket, bound in zip(buckets, bounds):
        if amount <= bound:
            bucket.inc(count)
            break


class Registry(Collector):
    """One app's metrics. counter/gauge/histogram return the prometheus_client objects themselves (`.inc()`,
    `.labels(method=...).observe(v)`, `.set(v)`); `render()` is the /metrics body."""

    def __init__(self):
        self._storage = CollectorRegistry()  # private: duplicate names raise DuplicateTimeseries
        self._names: dict[str, str] = {}  # prometheus_client's family name -> the name it was given
        self._headers: dict[str, str] = {}  # counter header name generate_latest writes -> TGI's
        self._buckets: set[str] = set()  # `<histogram>_bucket` sample names

    def counter(self, name: str, doc: str, labelnames: Sequence[str] = (), *,
                initial: Iterable[Sequence[str]] = ()) -> Counter:
        counter = self._add(Counter(name, doc, labelnames, registry=self._storage), name, initial)
        self._headers[self._family(counter) + "_total"] = name
        return counter

    def gauge(self, name: str, doc: str, labelnames: Sequence[str] = (), *,
              initial: Iterable[Sequence[str]] = ()) -> Gauge:
        return self._add(Gauge(name, doc, labelnames, registry=self._storage), name, initial)

    def histogram(self, name: str, doc: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float],
                  initial: Iterable[Sequence[str]] = ()) -> Histogram:
        self._buckets.add(name + "_bucket")
        return self._add(Histogram(name, doc, labelnames, registry=self._storage, buckets=buckets), name, initial)

    @staticmethod
    def _family(metric) -> str:
        return next(iter(metric.describe())).name  # a counter's name without `_total`

    def _add(self, metric, name: str, initial: Iterable[Sequence[str]]):
        self._names[self._family(metric)] = name
        for values in initial:
            metric.labels(*values)  # creates the child at zero
        return metric

    def collect(self) -> Iterator[Metric]:
        """Each stored family again, with TGI's sample names and no `_created` samples."""
        for family in self._storage.collect():
            out = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                if sample.name == family.name + "_created":
                    continue
                if family.type == "counter":
                    sample = sample._replace(name=self._names[family.name])
                elif "le" in sample.labels:
                    sample = sample._replace(labels={**sample.labels, "le": _bound(sample.labels["le"])})
                out.samples.append(sample)
            yield out

    def render(self) -> bytes:
        return "\n".join(map(self._line, generate_latest(self).decode().split("\n"))).encode()

    def _line(self, line: str) -> str:
        """One line of generate_latest's text with TGI's counter header names and `le` last."""
        if line.startswith(("# HELP ", "# TYPE ")):
            parts = line.split(" ", 3)  # "#", "HELP"/"TYPE", name, doc/type
            parts[2] = self._headers.get(parts[2], parts[2])
            return " ".join(parts)
        name, brace, rest = line.partition("{")
        if not brace or name not in self._buckets:
            return line
        labels, value = rest.rsplit("} ", 1)
        le = _LE_LABEL.search(labels)
        others = (labels[:le.start()] + labels[le.end():]).rstrip(",")
        return f"{name}{{{others + ',' if others else ''}{le[0].rstrip(',')}}} {value}"
