"""When a generation was received, validated (queued), first scheduled by the engine and finished, and TGI's
`x-*` timing headers built from it. All times are `time.monotonic()` seconds: the engine stamps `scheduled_at`
with the same clock (server.protocol.TokenEvent).

TGI's definitions (router/src/server.rs): validation = received -> queued (tokenization included), queue = queued
-> first put in a batch, inference = first put in a batch -> end (prefill included), time per token = inference /
generated tokens. Header times are integer milliseconds except `x-compute-time` (total seconds, a float string).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_SUMMED = ("x-compute-characters", "x-total-time", "x-validation-time", "x-queue-time", "x-inference-time",
           "x-time-per-token", "x-prompt-tokens", "x-generated-tokens")


@dataclass(frozen=True)
class Timing:
    received_at: float
    queued_at: float
    scheduled_at: float
    finished_at: float

    @property
    def total_s(self) -> float:
        return self.finished_at - self.received_at

    @property
    def validation_s(self) -> float:
        return self.queued_at - self.received_at

    @property
    def queue_s(self) -> float:
        return self.scheduled_at - self.queued_at

    @property
    def inference_s(self) -> float:
        return self.finished_at - self.scheduled_at

    @staticmethod
    def span(timings: Sequence["Timing"]) -> "Timing":
        """Several sequences of one request (n choices) as one: from the earliest start to the latest end."""
        return Timing(min(t.received_at for t in timings), min(t.queued_at for t in timings),
                      min(t.scheduled_at for t in timings), max(t.finished_at for t in timings))


def _ms(seconds: float) -> str:
    return str(int(max(seconds, 0.0) * 1000))


def generation_headers(compute_type: str, num_characters: int, timing: Timing, total_s: float, num_prompt: int,
                       num_generated: int) -> dict[str, str]:
    """The headers of a non-streamed /generate (and chat) response. total_s: received -> response built."""
    return {"x-compute-type": compute_type, "x-compute-time": str(total_s),
            "x-compute-characters": str(num_characters), "x-total-time": _ms(total_s),
            "x-validation-time": _ms(timing.validation_s), "x-queue-time": _ms(timing.queue_s),
            "x-inference-time": _ms(timing.inference_s),
            "x-time-per-token": _ms(timing.inference_s / max(num_generated, 1)),
            "x-prompt-tokens": str(num_prompt), "x-generated-tokens": str(num_generated)}


def summed_headers(per_prompt: Sequence[dict[str, str]]) -> dict[str, str]:
    """Non-streamed /v1/completions: each prompt's headers summed, and no `x-compute-time` (TGI)."""
    out = {"x-compute-type": per_prompt[0]["x-compute-type"]}
    for name in _SUMMED:
        out[name] = str(sum(int(h[name]) for h in per_prompt))
    return out


def stream_headers(compute_type: str, num_characters: int) -> dict[str, str]:
    """Every stream (TGI sends only these; the SSE response adds `X-Accel-Buffering: no`)."""
    return {"x-compute-type": compute_type, "x-compute-characters": str(num_characters)}
