"""Pydantic wire types of the TGI routes: request bodies (validated) and response shapes (documented in /docs).

Requests ignore unknown fields, like TGI. Range checks live in validation.py (they need TGI's order and messages);
pydantic only checks types, strictly as serde does (`"3"` is not an integer, `"yes"` not a boolean, 3.0 not a u32).
Responses are built as plain dicts on the hot path; the models here document them.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # Python's json accepts NaN; the engine must not


class GrammarParam(_Wire):
    type: Literal["json", "json_object", "regex", "json_schema"]
    value: Any


class GenerateParameters(_Wire):
    """TGI's GenerateParameters, plus extensions the OpenAI routes use (presence_penalty, logit_bias, ignore_eos)."""

    adapter_id: str | None = None
    best_of: StrictInt | None = Field(None, ge=0)
    decoder_input_details: StrictBool = False
    details: StrictBool = False
    do_sample: StrictBool = False
    frequency_penalty: StrictFloat | None = None
    grammar: GrammarParam | None = None
    max_new_tokens: StrictInt | None = Field(None, ge=0)
    repetition_penalty: StrictFloat | None = None
    return_full_text: bool | None = None
    seed: StrictInt | None = Field(None, ge=0, lt=2**64)
    stop: list[StrictStr] = Field(default_factory=list)
    temperature: StrictFloat | None = None
    top_k: StrictInt | None = None
    top_n_tokens: StrictInt | None = Field(None, ge=0)
    top_p: StrictFloat | None = None
    truncate: StrictInt | None = Field(None, ge=0)
    typical_p: StrictFloat | None = None
    watermark: StrictBool = False
    # extensions (not in TGI): OpenAI semantics
    presence_penalty: StrictFloat | None = None
    logit_bias: list[tuple[StrictInt, StrictFloat]] | None = None
    ignore_eos: StrictBool = False


def default_parameters() -> GenerateParameters:
    """TGI: a request without a `parameters` key samples (do_sample=true)."""
    return GenerateParameters(do_sample=True)


class GenerateRequest(_Wire):
    inputs: str
    parameters: GenerateParameters = Field(default_factory=default_parameters)


class CompatGenerateRequest(GenerateRequest):
    stream: StrictBool = False


class WatermarkDetectRequest(_Wire):
    text: str = Field(description="Text to test for this server's watermark.")


class WatermarkDetectResponse(_Wire):
    z_score: float
    p_value: float
    green_fraction: float
    num_tokens_scored: int
    gamma: float
    delta: float
    watermarked: bool = Field(description="z_score > 4 (a one-sided p-value below about 3e-5)")


# ---- responses (documentation; the routes emit the same shapes as dicts) ----

class Token(_Wire):
    id: int
    text: str
    logprob: float | None = None
    special: bool


class PrefillToken(_Wire):
    id: int
    text: str
    logprob: float | None = None


FinishReasonWire = Literal["length", "eos_token", "stop_sequence"]


class BestOfSequence(_Wire):
    generated_text: str
    finish_reason: FinishReasonWire
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] | None = None


class Details(_Wire):
    finish_reason: FinishReasonWire
    generated_tokens: int
    seed: int | None = None
    prefill: list[PrefillToken]
    tokens: list[Token]
    best_of_sequences: list[BestOfSequence] | None = None
    top_tokens: list[list[Token]] | None = None


class GenerateResponse(_Wire):
    generated_text: str
    details: Details | None = None


class StreamDetails(_Wire):
    finish_reason: FinishReasonWire
    generated_tokens: int
    seed: int | None = None
    input_length: int


class StreamResponse(_Wire):
    index: int
    token: Token
    top_tokens: list[Token] | None = None
    generated_text: str | None = None
    details: StreamDetails | None = None


class SimpleToken(_Wire):
    id: int
    text: str
    start: int
    stop: int


class Info(_Wire):
    model_id: str
    model_sha: str | None = None
    model_pipeline_tag: str | None = None
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int
    max_client_batch_size: int
    router: str
    version: str
    sha: str | None = None
    docker_label: str | None = None
    speculate: int = 0  # --speculate: draft tokens verified per sequence and step (0: off)


class ModelInfo(_Wire):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(ModelInfo):
    """GET /v1/models: OpenAI's `{"object": "list", "data": [...]}`, also carrying TGI's ModelInfo fields."""

    data: list[ModelInfo]


class ErrorResponse(_Wire):
    error: str
    error_type: str
