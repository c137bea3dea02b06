"""OpenAI wire types: the request bodies of /v1/chat/completions and /v1/completions, and the response builders.

Shapes follow OpenAI's API (what the `openai` SDK and `huggingface_hub` parse), widened where TGI clients send more:
`response_format` also takes TGI's `{"type": "json"|"json_schema"|"regex", "value": ...}`, and a message's
`tool_calls[].function` may carry `parameters` instead of `arguments`. Unknown fields are ignored, as in TGI.
Ranges that OpenAI documents are checked here (pydantic); everything that needs the tokenizer or the server's
limits is checked by the router's validation. Responses are built as dicts by the builders at the end of this file
(usage, logprobs, whose token texts come from router.detokenizer.TokenTexts) and checked in the tests against the
openai SDK's response models.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.detokenizer import IncrementalDetokenizer, TokenTexts


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)  # 1e400 is inf

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        # OpenAI documents most fields as nullable, and clients (TGI's own) send `"n": null`: null = the default.
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


# ---- requests ----------------------------------------------------------------------------------------------------

class FunctionCall(_Wire):
    name: str
    arguments: str | dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _tgi_parameters(cls, data: Any) -> Any:
        # TGI's own responses used `parameters`; accept both spellings.
        if isinstance(data, dict) and "arguments" not in data and "parameters" in data:
            data = {**data, "arguments": data["parameters"]}
        return data


class ToolCall(_Wire):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Wire):
    type: str
    text: str | None = None


class ChatMessage(_Wire):
    # `function`: OpenAI's legacy function result (LangChain's FunctionMessage); TGI passes any role to the template.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        if isinstance(content, list):
            for part in content:
                if part.type != "text" or part.text is None:
                    raise ValueError(f"content part of type {part.type!r} is not supported: this model reads text only")
        return content


class FunctionDefinition(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: FunctionName


class JsonSchemaFormat(_Wire):
    name: str = "response"
    description: str | None = None
    json_schema: dict[str, Any] | bool | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Wire):
    """OpenAI's `text` / `json_object` / `json_schema`, or TGI's `{type: json|json_schema|regex, value}`."""

    type: Literal["text", "json_object", "json_schema", "json", "regex"]
    json_schema: JsonSchemaFormat | None = None
    value: Any = None


class StreamOptions(_Wire):
    include_usage: bool = False


class _SamplingFields(_Wire):
    """Fields the chat and completions requests share (OpenAI's documented ranges)."""

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    repetition_penalty: float | None = None  # TGI's extension (its own client sends it)

    @field_validator("logit_bias")
    @classmethod
    def _bias_map(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not (key.strip().isascii() and key.strip().isdigit()):  # not "²", which int() refuses
                raise ValueError(f"logit_bias keys must be token ids as strings, got {key!r}")
            if not -100.0 <= value <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {value} for token {key}")
        return bias

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None  # auto | none | required | a function name (TGI) | named
    parallel_tool_calls: bool | None = None
    tool_prompt: str | None = None  # TGI: text appended after the tool list when the template does not show tools

    @model_validator(mode="after")
    def _consistent(self) -> "ChatCompletionRequest":
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)  # None: to EOS or the token budget (TGI, not OpenAI's 16)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and (not prompt or any(isinstance(p, list) and not p for p in prompt)):
            raise ValueError("prompt must not be empty")
        return prompt

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # one prompt given as token ids
        return list(self.prompt)


# ---- responses ---------------------------------------------------------------------------------------------------
# The routes build their response bodies as dicts (builders below); the tests validate them against the openai SDK's
# own models. Only the streamed tool-call delta is built as a model, by router/tools.py.

class DeltaFunctionCall(_Wire):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Wire):
    index: int = 0
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall


# ---- builders (dicts of the shapes above) ------------------------------------------------------------------------

MIN_LOGPROB = -9999.0  # OpenAI's floor; a masked token's -inf is not valid JSON


def usage(num_prompt: int, num_completion: int) -> dict:
    return {"prompt_tokens": num_prompt, "completion_tokens": num_completion,
            "total_tokens": num_prompt + num_completion}


def _logprob(value: float | None) -> float:
    return MIN_LOGPROB if value is None else max(float(value), MIN_LOGPROB)


def chat_logprob(texts: TokenTexts, token, top_tokens) -> dict:
    """One entry of a chat choice's `logprobs.content` (token: router.infer.TokenInfo); token strings are each
    token's own text, leading space kept (`TokenTexts.piece`)."""
    def entry(t) -> dict:
        return {"token": texts.piece(t.id), "logprob": _logprob(t.logprob), "bytes": texts.bytes(t.id)}
    return {**entry(token), "top_logprobs": [entry(t) for t in top_tokens]}


def completion_logprobs(texts: TokenTexts, prompt_tokens, prompt_text: str, tokens, top_tokens,
                        shares: list[str], start: int | None = None) -> dict:
    """OpenAI's legacy logprobs object. prompt_tokens (echo): the prefill, its first logprob None; tokens: generated
    TokenInfos with their top alternatives; shares: each generated token's share of the returned text (offsets)."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset, detok = 0, IncrementalDetokenizer(texts.tokenizer)
    for t in prompt_tokens:  # prompt offsets follow the prompt as decoded (special tokens take no room)
        out["tokens"].append(texts.piece(t.id))
        out["token_logprobs"].append(None if t.logprob is None else _logprob(t.logprob))
        out["top_logprobs"].append(None if t.logprob is None else {texts.piece(t.id): _logprob(t.logprob)})
        out["text_offset"].append(min(offset, len(prompt_text)))
        offset += len(detok.add(t.id, t.special))
    offset = len(prompt_text) if start is None else start
    for t, tops, text in zip(tokens, top_tokens, shares):
        out["tokens"].append(texts.piece(t.id))
        out["token_logprobs"].append(_logprob(t.logprob))
        top = {texts.piece(alt.id): _logprob(alt.logprob) for alt in tops}
        out["top_logprobs"].append({texts.piece(t.id): _logprob(t.logprob), **top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out
