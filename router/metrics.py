"""Prometheus metrics: every `tgi_*` name of TGI's router (CONTRACT §7) with its labels, plus time to first token,
generated tokens and KV-cache usage. One private CollectorRegistry per app: no process globals, so several apps
(tests) never collide. Engine gauges are refreshed from `client.stats()` at scrape time.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = tuple(0.00015 * 1.5 ** i for i in range(35))  # TGI: 35 geometric buckets from 0.15 ms
BATCH_METHODS = ("prefill", "decode")


def _linear(maximum: int, steps: int = 100) -> tuple[float, ...]:
    step = max(maximum / steps, 1.0)
    return tuple(step * (i + 1) for i in range(steps))


class Metrics:
    def __init__(self, max_input_tokens: int, max_total_tokens: int):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.request_count = Counter("tgi_request_count", "Requests received", registry=r)
        self.request_success = Counter("tgi_request_success", "Requests that succeeded", registry=r)
        self.request_failure = Counter("tgi_request_failure", "Requests that failed", ["err"], registry=r)
        self.batch_inference_count = Counter("tgi_batch_inference_count", "Forward passes", ["method"], registry=r)
        self.batch_inference_success = Counter("tgi_batch_inference_success", "Forward passes", ["method"], registry=r)
        self.batch_inference_failure = Counter("tgi_batch_inference_failure", "Failed passes", ["method"], registry=r)
        self.batch_concat = Counter("tgi_batch_concat", "Batch concatenations", ["reason"], registry=r)
        self.queue_size = Gauge("tgi_queue_size", "Sequences waiting in the engine", registry=r)
        self.batch_current_size = Gauge("tgi_batch_current_size", "Sequences running in the engine", registry=r)
        self.batch_current_max_tokens = Gauge("tgi_batch_current_max_tokens", "KV tokens in use", registry=r)
        self.batch_max_total_tokens = Gauge("tgi_batch_max_total_tokens", "KV capacity in tokens", registry=r)
        self.kv_cache_usage = Gauge("tgi_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use", registry=r)
        self.requests_in_flight = Gauge("tgi_requests_in_flight", "HTTP generation requests in flight", registry=r)
        self.generated_tokens_total = Counter("tgi_generated_tokens", "Tokens generated, all requests", registry=r)
        self._histograms(r, max_input_tokens, max_total_tokens)

    def _histograms(self, r: CollectorRegistry, max_input: int, max_total: int) -> None:
        def duration(name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, labels, buckets=DURATION_BUCKETS, registry=r)

        self.request_duration = duration("tgi_request_duration", "Request latency (s)")
        self.validation_duration = duration("tgi_request_validation_duration", "Validation time (s)")
        self.queue_duration = duration("tgi_request_queue_duration", "Submit to first token (s)")
        self.inference_duration = duration("tgi_request_inference_duration", "First to last token (s)")
        self.time_per_token = duration("tgi_request_mean_time_per_token_duration", "Mean time per token (s)")
        self.time_to_first_token = duration("tgi_request_time_to_first_token", "Time to first token (s)")
        self.generated_tokens = Histogram("tgi_request_generated_tokens", "Generated tokens per request",
                                          buckets=_linear(max_total), registry=r)
        self.input_length = Histogram("tgi_request_input_length", "Prompt tokens per request",
                                      buckets=_linear(max_input), registry=r)
        self.max_new_tokens = Histogram("tgi_request_max_new_tokens", "max_new_tokens per request",
                                        buckets=_linear(max_total), registry=r)
        self.skipped_tokens = Histogram("tgi_request_skipped_tokens", "Prompt tokens served from the prefix cache",
                                        buckets=_linear(max_input), registry=r)
        self.batch_next_size = Histogram("tgi_batch_next_size", "Batch size", buckets=tuple(range(1, 1025, 8)),
                                         registry=r)
        for name in ("forward", "decode", "filter", "inference", "concat"):
            setattr(self, f"batch_{name}_duration",
                    duration(f"tgi_batch_{name}_duration", f"Batch {name} time (s)", ("method",)))

    def observe_sequence(self, ttft_s: float, num_generated: int) -> None:
        """One finished sequence (each best_of run counts)."""
        self.time_to_first_token.observe(ttft_s)
        self.generated_tokens_total.inc(num_generated)

    def observe_request(self, gen, num_input: int, max_new_tokens: int, validation_s: float, total_s: float) -> None:
        self.request_success.inc()
        self.request_duration.observe(total_s)
        self.validation_duration.observe(validation_s)
        self.queue_duration.observe(gen.queue_s)
        self.inference_duration.observe(gen.inference_s)
        self.time_per_token.observe(gen.inference_s / max(gen.num_generated_tokens, 1))
        self.generated_tokens.observe(gen.num_generated_tokens)
        self.input_length.observe(num_input)
        self.max_new_tokens.observe(max_new_tokens)

    def observe_step(self, step) -> None:
        """One engine step (server.protocol.StepInfo), called on the engine thread (prometheus-client is
        thread-safe). Our batches are rebuilt every step, so TGI's filter and concat durations stay empty."""
        m = step.method
        self.batch_inference_count.labels(method=m).inc()
        (self.batch_inference_success if step.ok else self.batch_inference_failure).labels(method=m).inc()
        self.batch_next_size.observe(step.num_seqs)
        self.batch_forward_duration.labels(method=m).observe(step.forward_s)
        self.batch_decode_duration.labels(method=m).observe(step.sample_s)
        self.batch_inference_duration.labels(method=m).observe(step.total_s)

    def observe_failure(self, error_type: str) -> None:
        err = {"incomplete_generation": "incomplete", "incomplete_generation_stream": "incomplete",
               "template_error": "template"}.get(error_type, error_type)
        self.request_failure.labels(err=err).inc()

    def refresh(self, stats, num_in_flight: int) -> None:
        self.queue_size.set(stats.num_waiting)
        self.batch_current_size.set(stats.num_running)
        self.batch_current_max_tokens.set(stats.num_blocks_used * stats.block_size)
        self.batch_max_total_tokens.set(stats.num_blocks_total * stats.block_size)
        self.kv_cache_usage.set(stats.num_blocks_used / max(stats.num_blocks_total, 1))
        self.requests_in_flight.set(num_in_flight)

    def render(self) -> bytes:
        return generate_latest(self.registry)
