"""Tools and response_format -> the grammar the router's validation takes; generated text -> OpenAI tool calls.

Design (it works with any model, random weights included, because the grammar, not the model, guarantees the shape):
- A tool call is generated as ONE JSON object `{"name": <tool name>, "arguments": {...}}`, name first. Its schema is an
  `anyOf` with one branch per allowed tool: `name` is a `const`, `arguments` is that function's `parameters` schema.
- `tool_choice` picks the branches: `required` = every tool, a named function = only that one, `none` = no tools at
  all (the request is plain chat; the tools are not shown to the template either, as in TGI), `auto` (the default
  when tools are given) = the tool-call object OR free text. `auto` is a regex union of the tool-call JSON regex
  (built by grammars.spec from the schema above, with its schema checks and fixes) and a free-text branch that cannot begin with `{` (after optional
  whitespace), so the first non-blank character decides: `{` means a tool call that the grammar will complete, and
  anything else is an ordinary answer. No second generation is ever needed (TGI re-runs the request for `no_tool`).
- At most one call per choice (`parallel_tool_calls` is accepted; a choice never holds two calls).
- `ToolCallStream` turns the generated text into OpenAI deltas as it arrives: content deltas for text; for a call,
  one delta with the call id, type and function name once the name is complete, then `arguments` fragments as
  they are generated (holding back the closing brace of the outer object). Non-streamed responses run the same
  parser over the whole text, so both paths agree.
- `response_format`: `text` -> none; `json_object` -> any JSON object; `json_schema` (OpenAI, `strict` or not: the
  grammar always enforces the schema) -> that schema; TGI's `{type: json|json_schema|regex, value}` passes through.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from grammars.spec import GrammarError, parse_grammar, regex_of
from router.errors import ValidationError
from router.openai_schemas import (ChatCompletionRequest, DeltaFunctionCall, DeltaToolCall, NamedToolChoice,
                                   ResponseFormat, Tool)

# Free text whose first non-blank character is not `{` (outlines-core cannot index a regex that matches "").
FREE_TEXT_REGEX = r"[ \n]*[^{ \n](?s:.)*"
ANY_JSON_OBJECT = {"type": "object"}
DEFAULT_TOOL_PROMPT = ("Answer with one JSON object {\"name\": <function name>, \"arguments\": <object>} "
                       "to call one of these functions, or answer in plain text.")


class ToolError(ValueError):
    """Bad tools / tool_choice / response_format (HTTP 422, error_type tool_error)."""


# ---- grammar construction ----------------------------------------------------------------------------------------

def tool_call_schema(tools: list[Tool]) -> dict:
    """JSON schema of one call to any of `tools`: {"name": const, "arguments": parameters}."""
    branches = []
    for tool in tools:
        parameters = tool.function.parameters or {"type": "object", "properties": {}}
        branches.append({
            "type": "object",
            "properties": {"name": {"const": tool.function.name}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def selected_tools(request: ChatCompletionRequest) -> tuple[list[Tool], str]:
    """(the tools the model may call, mode) where mode is "text" (no tool), "auto" or "required"."""
    tools, choice = request.tools or [], request.tool_choice
    if not tools:
        if choice not in (None, "none", "auto"):
            raise ToolError("tool_choice needs tools: the request has none")
        return [], "text"
    if choice == "none":
        return [], "text"
    if choice in (None, "auto", "required"):
        return tools, choice or "auto"
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice  # TGI: any other string names one
    named = [t for t in tools if t.function.name == name]
    if not named:
        raise ToolError(f"Tool with name {name} not found")
    return named, "required"


def _regex_from_schema(schema: Any) -> str:
    """The regex of a JSON schema through grammars.spec (key order kept; it allows one leading space)."""
    try:
        return regex_of(parse_grammar({"type": "json", "value": schema}))
    except GrammarError as e:
        raise ToolError(f"cannot build a grammar from the tool parameters: {e}") from None


def tool_grammar(tools: list[Tool], mode: str) -> dict | None:
    """The grammar spec for a tool mode; None for plain text."""
    if mode == "text":
        return None
    # A regex, not a JSON grammar: `auto` joins it with free text. The schema's key order is kept, so "name" comes
    # first and a streamed call can announce its function before the arguments arrive. The regex's leading `[ ]?`
    # lets SentencePiece models start with their usual "▁{" token.
    call = _regex_from_schema(tool_call_schema(tools))
    return {"type": "regex", "value": call if mode == "required" else f"(?:{call})|{FREE_TEXT_REGEX}"}


def response_format_grammar(response_format: ResponseFormat | None) -> dict | None:
    """OpenAI's and TGI's response_format forms -> the grammar spec ({"type", "value"}), or None."""
    if response_format is None or response_format.type == "text":
        return None
    kind = response_format.type
    if kind == "json_object":  # OpenAI's bare form: any object; TGI's json_object may carry a schema
        return {"type": "json", "value": ANY_JSON_OBJECT if response_format.value is None else response_format.value}
    if kind == "json_schema" and response_format.json_schema is not None:
        schema = response_format.json_schema.json_schema
        if schema is None:
            raise ValidationError("`response_format.json_schema.schema` is required")
        return {"type": "json", "value": schema}
    if response_format.value is None:
        raise ValidationError(f"`response_format` of type {kind!r} needs `json_schema` (OpenAI) or `value` (TGI)")
    value = response_format.value
    if kind == "json_schema" and isinstance(value, dict) and "schema" in value:
        value = value["schema"]  # TGI's {"type": "json_schema", "value": {"name", "schema"}}
    return {"type": "regex" if kind == "regex" else "json", "value": value}


def request_grammar(request: ChatCompletionRequest) -> tuple[dict | None, list[Tool], str]:
    """(grammar spec, tools shown to the model, mode) for a chat request."""
    tools, mode = selected_tools(request)
    format_grammar = response_format_grammar(request.response_format)
    if mode != "text" and format_grammar is not None:
        raise ToolError("Grammar and tools are mutually exclusive")
    return (format_grammar if mode == "text" else tool_grammar(tools, mode)), tools, mode


# ---- parsing generated text --------------------------------------------------------------------------------------

# Everything before the arguments value, in the order the grammar generates it.
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
# What may still turn out to be the outer object's closing brace (plus whitespace): held back while streaming.
_CALL_TAIL = re.compile(r"\s*\}?\s*$")


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallStream:
    """Generated text -> OpenAI chat deltas for one choice. Mode "text", "auto" or "required" (see selected_tools)."""

    mode: str
    state: str = ""  # "undecided" -> "text" | "head" -> "args"
    buffer: str = ""
    held: str = ""
    call_id: str = field(default_factory=new_call_id)
    name: str | None = None
    arguments: str = ""

    def __post_init__(self) -> None:
        self.state = "text" if self.mode == "text" else "undecided"

    @property
    def is_call(self) -> bool:
        return self.state in ("head", "args")

    def feed(self, text: str) -> list[dict]:
        """New text -> a list of delta fields: {"content": str} or {"tool_calls": [DeltaToolCall]}."""
        if not text:
            return []
        if self.state == "text":
            return [{"content": text}]
        self.buffer += text
        if self.state == "undecided":
            stripped = self.buffer.lstrip()
            if not stripped:
                return []
            if stripped[0] != "{":
                self.state = "text"
                return [{"content": self.buffer}]
            self.state = "head"
        if self.state == "head":
            return self._parse_head()
        return self._stream_arguments(text)

    def _parse_head(self) -> list[dict]:
        match = _CALL_HEAD.match(self.buffer)
        if match is None:
            return []
        self.name = json.loads(f'"{match.group(1)}"')
        self.state = "args"
        first = DeltaToolCall(index=0, id=self.call_id, type="function",
                              function=DeltaFunctionCall(name=self.name, arguments=""))
        return [{"tool_calls": [first]}] + self._stream_arguments(self.buffer[match.end():])

    def _stream_arguments(self, text: str) -> list[dict]:
        pending = self.held + text
        cut = _CALL_TAIL.search(pending).start()
        self.held = pending[cut:]
        if cut == 0:
            return []
        self.arguments += pending[:cut]
        return [{"tool_calls": [DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=pending[:cut]))]}]

    def finish(self) -> list[dict]:
        """Flush at the end of generation: undecided whitespace becomes content; the held closing brace is dropped."""
        if self.state == "undecided" and self.buffer:
            self.state = "text"
            return [{"content": self.buffer}]
        if self.state == "head":  # the name never completed (length): give the raw text back as content
            self.state = "text"
            return [{"content": self.buffer}]
        return []


def finish_reason(stream: ToolCallStream, engine_reason: str) -> str:
    """OpenAI finish_reason: `length` wins; a completed call is `tool_calls`; everything else `stop`."""
    if engine_reason == "length":
        return "length"
    return "tool_calls" if stream.is_call else "stop"


def tools_for_template(tools: list[Tool]) -> list[dict]:
    """The tools as HF chat templates expect them (OpenAI's `{"type": "function", "function": {...}}` dicts)."""
    return [t.model_dump(exclude_none=True) for t in tools]


def tool_prompt_suffix(tools: list[Tool], tool_prompt: str | None, template_handles_tools: bool) -> str:
    """Text appended to the last message when the template cannot show tools itself (TGI's rule)."""
    prompt = tool_prompt or DEFAULT_TOOL_PROMPT
    if template_handles_tools:
        return f"\n---\n{prompt}" if tool_prompt else ""
    return f"\n---\n{json.dumps(tools_for_template(tools), ensure_ascii=False)}\n{prompt}"
