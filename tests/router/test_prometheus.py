"""router.prometheus on its own: TGI's exact names over prometheus_client (counters without `_total`, no `_created`,
`le` last, whole bucket bounds without ".0"), text that prometheus_client's own parser reads back, escaped labels,
zero-initialised label sets and thread-safe storage."""
from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.prometheus import Registry, observe_many


def families(registry: Registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(registry.render().decode())}


def test_counter_names_types_and_no_created():
    r = Registry()
    r.counter("tgi_request_count", "Number of total requests").inc(2)
    r.counter("tgi_generated_tokens_total", "Tokens generated").inc(5)
    text = r.render().decode()
    assert text.splitlines()[:3] == ["# HELP tgi_request_count Number of total requests",
                                     "# TYPE tgi_request_count counter", "tgi_request_count 2.0"]
    assert "# TYPE tgi_generated_tokens_total counter\ntgi_generated_tokens_total 5.0\n" in text
    assert "_created" not in text and "tgi_request_count_total" not in text


def test_histogram_le_last_whole_bounds_and_initial_zero_series():
    r = Registry()
    h = r.histogram("tgi_batch_forward_duration", "Forward (s)", ("method",), buckets=(0.5, 1.0, 2.0),
                    initial=[("prefill",), ("decode",)])
    h.labels(method="decode").observe(0.75)
    lines = r.render().decode().splitlines()
    assert 'tgi_batch_forward_duration_bucket{method="decode",le="0.5"} 0.0' in lines
    assert 'tgi_batch_forward_duration_bucket{method="decode",le="1"} 1.0' in lines
    assert 'tgi_batch_forward_duration_bucket{method="decode",le="+Inf"} 1.0' in lines
    assert 'tgi_batch_forward_duration_bucket{method="prefill",le="+Inf"} 0.0' in lines
    assert 'tgi_batch_forward_duration_sum{method="decode"} 0.75' in lines
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for s in families(r)["tgi_batch_forward_duration"].samples}
    assert samples[("tgi_batch_forward_duration_count", (("method", "prefill"),))] == 0


def test_observe_many_is_observe_repeated():
    """The bulk update against the loop, on values inside, on and beyond the bounds, and on labelled children; a
    labelled parent still refuses, as observe does."""
    bulk, loop = Registry(), Registry()
    hists = [r.histogram("tgi_request_skipped_tokens", "Skipped", buckets=(0.0, 1.0, 2.5)) for r in (bulk, loop)]
    labelled = [r.histogram("tgi_batch_forward_duration", "Forward (s)", ("method",), buckets=(0.5, 1.0))
                for r in (bulk, loop)]
    for value, count in ((0.0, 64), (1.0, 3), (0.7, 5), (2.5, 1), (9.0, 2), (-1.0, 4), (0.0, 0)):
        observe_many(hists[0], value, count)
        observe_many(labelled[0].labels(method="decode"), value, count)
        for _ in range(count):
            hists[1].observe(value)
            labelled[1].labels(method="decode").observe(value)
    assert bulk.render() == loop.render()
    assert 'tgi_request_skipped_tokens_bucket{le="0"} 68.0' in bulk.render().decode()
    with pytest.raises(ValueError):
        observe_many(labelled[0], 1.0, 2)


def test_tricky_label_values_survive_and_le_moves_past_every_label():
    r = Registry()
    h = r.histogram("x_seconds", "Doc with \\ and\nnewline", ("backend", "method"), buckets=(1.0,))
    tricky = 'a",le="9\\\n'
    h.labels(backend=tricky, method="m").observe(0.5)
    line = next(l for l in r.render().decode().splitlines() if l.startswith("x_seconds_bucket") and 'le="1"' in l)
    assert line.endswith(',method="m",le="1"} 1.0')
    parsed = families(r)["x_seconds"]
    assert parsed.documentation == "Doc with \\ and\nnewline"
    bucket = next(s for s in parsed.samples if s.name == "x_seconds_bucket" and s.labels["le"] == "1")
    assert bucket.labels == {"backend": tricky, "method": "m", "le": "1"} and bucket.value == 1


def test_gauge_counter_labels_and_parse_back():
    r = Registry()
    r.gauge("tgi_queue_size", "Queue").set(3)
    c = r.counter("tgi_request_failure", "Failed", ("err",), initial=[("validation",), ("overloaded",)])
    c.labels(err="validation").inc()
    parsed = families(r)
    assert parsed["tgi_queue_size"].type == "gauge" and parsed["tgi_queue_size"].samples[0].value == 3
    assert parsed["tgi_request_failure"].type == "counter"
    assert {s.labels["err"]: s.value for s in parsed["tgi_request_failure"].samples} == {"validation": 1,
                                                                                         "overloaded": 0}


def test_duplicate_names_are_refused():
    r = Registry()
    r.counter("tgi_request_count", "Number of total requests")
    with pytest.raises(ValueError):
        r.gauge("tgi_request_count", "again")


def test_concurrent_increments_all_count():
    r = Registry()
    c = r.counter("tgi_batch_inference_count", "Steps", ("method",), initial=[("decode",)])

    def work():
        for _ in range(5000):
            c.labels(method="decode").inc()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 'tgi_batch_inference_count{method="decode"} 20000.0' in r.render().decode()
