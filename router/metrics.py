"""Prometheus metrics: every `tgi_*` name of TGI's router (CONTRACT §7) with TGI's types, labels and exposition
(counters without `_total`, no `_created` samples: router.prometheus, over prometheus_client), plus time to first
token, generated tokens and KV-cache usage. One private registry per app: no process globals, so several apps (tests)
never collide. Engine gauges are refreshed from `client.stats()` at scrape time.

Request histograms are recorded once per finished engine sequence whatever the route (router.infer calls
`observe_generation`), as TGI records them in each generate call; `tgi_request_success` is counted by the routes.
"""
from __future__ import annotations

from router.prometheus import Histogram, Registry, observe_many

DURATION_BUCKETS = tuple(0.00015 * 1.5 ** i for i in range(35))  # TGI: 35 geometric buckets from 0.15 ms
BATCH_METHODS = ("prefill", "decode")
# TGI's err labels. Every error a counted request can end with maps to one of them.
FAILURE_LABELS = ("validation", "overloaded", "generation", "incomplete", "template", "dropped")
_ERR = {"incomplete_generation": "incomplete", "incomplete_generation_stream": "incomplete",
        "template_error": "template", "missing_template_variable": "template", "tool_error": "validation",
        "suffix not supported": "validation", "batch size exceeded": "validation"}
# TGI buckets batch sizes 1..1024 in steps of 1 (1,024 series per scrape). Steps of 1 up to 16 keep small batches
# exact (where one sequence more or less matters), then steps of 1.33-1.5x keep any quantile within ~25% of the true
# size up to 1,024, in 33 series.
BATCH_SIZE_BUCKETS = (*range(1, 17), 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 640, 768, 896, 1024)


def _linear(maximum: int, steps: int = 100) -> tuple[float, ...]:
    step = max(maximum / steps, 1.0)
    return tuple(step * (i + 1) for i in range(steps))


class Metrics:
    def __init__(self, max_input_tokens: int, max_total_tokens: int):
        self.registry = r = Registry()
        self.request_count = r.counter("tgi_request_count", "Number of total requests")
        self.request_success = r.counter("tgi_request_success", "Number of successful requests")
        self.request_failure = r.counter("tgi_request_failure", "Number of failed requests", ("err",),
                                      initial=[(e,) for e in FAILURE_LABELS])
        methods = [(m,) for m in BATCH_METHODS]
        self.batch_inference_count = r.counter("tgi_batch_inference_count", "Inference calls", ("method",),
                                            initial=methods)
        self.batch_inference_success = r.counter("tgi_batch_inference_success", "Successful inference calls",
                                              ("method",), initial=methods)
        self.batch_inference_failure = r.counter("tgi_batch_inference_failure", "Failed inference calls",
                                              ("method",), initial=methods)
        # Our batch is rebuilt every step, so nothing is ever concatenated: the series exist and stay at 0.
        self.batch_concat = r.counter("tgi_batch_concat", "Batch concatenations", ("reason",),
                                   initial=[("backpressure",), ("wait_exceeded",), ("chunking",)])
        self.queue_size = r.gauge("tgi_queue_size", "Current queue size")
        self.batch_current_size = r.gauge("tgi_batch_current_size", "Current batch size")
        self.batch_current_max_tokens = r.gauge("tgi_batch_current_max_tokens", "Maximum tokens for the current batch")
        self.batch_max_total_tokens = r.gauge("tgi_batch_max_total_tokens", "Maximum amount of tokens in total")
        self.kv_cache_usage = r.gauge("tgi_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use")
        self.requests_in_flight = r.gauge("tgi_requests_in_flight", "HTTP generation requests in flight")
        self.generated_tokens_total = r.counter("tgi_generated_tokens_total", "Tokens generated, all requests")
        self._request_histograms(r, max_input_tokens, max_total_tokens)
        self._batch_histograms(r)

    def _request_histograms(self, r: Registry, max_input: int, max_total: int) -> None:
        def duration(name: str, doc: str) -> Histogram:
            return r.histogram(name, doc, buckets=DURATION_BUCKETS)

        self.request_duration = duration("tgi_request_duration", "Request duration (s)")
        self.validation_duration = duration("tgi_request_validation_duration", "Request validation duration (s)")
        self.queue_duration = duration("tgi_request_queue_duration", "Queued until first scheduled (s)")
        self.inference_duration = duration("tgi_request_inference_duration", "First scheduled until done (s)")
        self.time_per_token = duration("tgi_request_mean_time_per_token_duration", "Mean time per token (s)")
        self.time_to_first_token = duration("tgi_request_time_to_first_token", "Time to first token (s)")
        self.generated_tokens = r.histogram("tgi_request_generated_tokens", "Generated tokens per request",
                                         buckets=_linear(max_total))
        self.input_length = r.histogram("tgi_request_input_length", "Input tokens per request",
                                     buckets=_linear(max_input))
        self.max_new_tokens = r.histogram("tgi_request_max_new_tokens", "Maximum new tokens per request",
                                       buckets=_linear(max_total))
        # TGI: tokens a step produced beyond the first (speculative decoding); without speculation always 0.
        self.skipped_tokens = r.histogram("tgi_request_skipped_tokens", "Speculated tokens per step",
                                       buckets=(0.0, 1.0, 2.0, 3.0, 4.0))

    def _batch_histograms(self, r: Registry) -> None:
        methods = [(m,) for m in BATCH_METHODS]

        def duration(name: str, doc: str, initial=methods) -> Histogram:
            return r.histogram(name, doc, ("method",), buckets=DURATION_BUCKETS, initial=initial)

        self.batch_next_size = r.histogram("tgi_batch_next_size", "Batch size", buckets=BATCH_SIZE_BUCKETS)
        self.batch_forward_duration = duration("tgi_batch_forward_duration", "Batch forward duration (s)")
        self.batch_decode_duration = duration("tgi_batch_decode_duration", "Batch sampling duration (s)")
        self.batch_inference_duration = duration("tgi_batch_inference_duration", "Batch inference duration (s)")
        # TGI's filter/concat steps do not exist here (the batch is rebuilt every step): present, empty.
        self.batch_filter_duration = duration("tgi_batch_filter_duration", "Batch filtering duration (s)")
        self.batch_concat_duration = duration("tgi_batch_concat_duration", "Batch concat duration (s)",
                                              [("decode",)])

    def observe_sequence(self, ttft_s: float, num_generated: int) -> None:
        """One finished sequence (each best_of run counts)."""
        self.time_to_first_token.observe(ttft_s)
        self.generated_tokens_total.inc(num_generated)
        observe_many(self.skipped_tokens, 0.0, num_generated)  # one step per token, nothing speculated

    def observe_generation(self, timing, num_input: int, max_new_tokens: int, num_generated: int) -> None:
        """TGI's request histograms for one successful generation; `timing` is a router.timing.Timing."""
        self.request_duration.observe(timing.total_s)
        self.validation_duration.observe(timing.validation_s)
        self.queue_duration.observe(timing.queue_s)
        self.inference_duration.observe(timing.inference_s)
        self.time_per_token.observe(timing.inference_s / max(num_generated, 1))
        self.generated_tokens.observe(num_generated)
        self.input_length.observe(num_input)
        self.max_new_tokens.observe(max_new_tokens)

    def observe_step(self, step) -> None:
        """One engine step (server.protocol.StepInfo), called on the engine thread (the metrics are thread-safe)."""
        m = step.method
        self.batch_inference_count.labels(method=m).inc()
        (self.batch_inference_success if step.ok else self.batch_inference_failure).labels(method=m).inc()
        self.batch_next_size.observe(step.num_seqs)
        self.batch_forward_duration.labels(method=m).observe(step.forward_s)
        self.batch_decode_duration.labels(method=m).observe(step.sample_s)
        self.batch_inference_duration.labels(method=m).observe(step.total_s)

    def observe_failure(self, error_type: str) -> None:
        self.request_failure.labels(err=_ERR.get(error_type, error_type)).inc()

    def refresh(self, stats, num_in_flight: int) -> None:
        self.queue_size.set(stats.num_waiting)
        self.batch_current_size.set(stats.num_running)
        self.batch_current_max_tokens.set(stats.num_blocks_used * stats.block_size)
        self.batch_max_total_tokens.set(stats.num_blocks_total * stats.block_size)
        self.kv_cache_usage.set(stats.num_blocks_used / max(stats.num_blocks_total, 1))
        self.requests_in_flight.set(num_in_flight)

    def render(self) -> bytes:
        return self.registry.render()
