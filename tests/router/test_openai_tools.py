"""Tools and response_format -> grammar specs, and the tool-call stream parser (no server)."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from router.errors import ValidationError
from router.openai_schemas import ChatCompletionRequest, ResponseFormat
from router.tools import (ToolCallStream, ToolError, finish_reason, request_grammar, response_format_grammar,
                          tool_call_schema, tool_prompt_suffix)

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def _request(**kwargs) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **kwargs})


def test_tool_choice_modes():
    grammar, tools, mode = request_grammar(_request(tools=[WEATHER, CLOCK]))
    assert mode == "auto" and [t.function.name for t in tools] == ["get_weather", "get_time"]
    assert grammar["type"] == "regex"
    grammar, tools, mode = request_grammar(_request(tools=[WEATHER, CLOCK], tool_choice="required"))
    assert mode == "required" and grammar["type"] == "regex"
    required = re.compile(grammar["value"])
    assert required.fullmatch('{"name": "get_time", "arguments": {}}')
    assert not required.fullmatch('{"arguments": {}, "name": "get_time"}')  # name first: streams announce it
    assert not required.fullmatch("plain text")
    grammar, tools, mode = request_grammar(
        _request(tools=[WEATHER, CLOCK], tool_choice={"type": "function", "function": {"name": "get_time"}}))
    assert [t.function.name for t in tools] == ["get_time"]
    assert re.fullmatch(grammar["value"], '{"name":"get_time","arguments":{}}')
    assert not re.fullmatch(grammar["value"], '{"name":"get_weather","arguments":{"city":"a","unit":"C"}}')
    assert request_grammar(_request(tools=[WEATHER], tool_choice="none")) == (None, [], "text")
    _, tools, mode = request_grammar(_request(tools=[WEATHER, CLOCK], tool_choice="get_time"))  # TGI's string form
    assert mode == "required" and [t.function.name for t in tools] == ["get_time"]
    assert request_grammar(_request(tools=[WEATHER], tool_choice=None, n=None, logprobs=None))[2] == "auto"


def test_tool_errors():
    with pytest.raises(ToolError, match="Tool with name nope not found"):
        request_grammar(_request(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}))
    with pytest.raises(ToolError, match="mutually exclusive"):
        request_grammar(_request(tools=[WEATHER], response_format={"type": "json_object"}))
    with pytest.raises(ToolError, match="needs tools"):
        request_grammar(_request(tool_choice="required"))


def test_tool_call_schema_validates_calls():
    schema = tool_call_schema([_request(tools=[WEATHER, CLOCK]).tools[0], _request(tools=[CLOCK]).tools[0]])
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}, schema)
    jsonschema.validate({"name": "get_time", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "other", "arguments": {}}, schema)


def test_auto_regex_is_a_call_or_text_that_does_not_open_an_object():
    regex = re.compile(request_grammar(_request(tools=[WEATHER, CLOCK]))[0]["value"])
    assert regex.fullmatch('{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "F"}}')
    assert regex.fullmatch(' {"name":"get_time","arguments":{}}')
    assert regex.fullmatch("The weather is {nice}\nand warm.")
    assert not regex.fullmatch("")  # outlines-core cannot index a regex matching "": the model must say something
    assert not regex.fullmatch('{"name": "get_weather", "arguments": {}}')  # required args missing
    assert not regex.fullmatch(" {free text}")
    assert not regex.fullmatch("\n{")


def test_response_format_forms():
    fmt = ResponseFormat.model_validate
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert response_format_grammar(None) is None
    assert response_format_grammar(fmt({"type": "text"})) is None
    assert response_format_grammar(fmt({"type": "json_object"})) == {"type": "json", "value": {"type": "object"}}
    assert response_format_grammar(fmt({"type": "json_object", "value": schema})) == {"type": "json", "value": schema}
    openai_form = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert response_format_grammar(fmt(openai_form)) == {"type": "json", "value": schema}
    assert response_format_grammar(fmt({"type": "json", "value": schema})) == {"type": "json", "value": schema}
    tgi_schema = {"type": "json_schema", "value": {"name": "x", "schema": schema}}
    assert response_format_grammar(fmt(tgi_schema)) == {"type": "json", "value": schema}
    assert response_format_grammar(fmt({"type": "regex", "value": "[0-9]+"})) == {"type": "regex", "value": "[0-9]+"}
    with pytest.raises(ValidationError, match="needs `json_schema`"):
        response_format_grammar(fmt({"type": "json_schema"}))


def _run(stream: ToolCallStream, pieces: list[str]) -> list[dict]:
    deltas = [d for piece in pieces for d in stream.feed(piece)]
    return deltas + stream.finish()


def _collect(deltas: list[dict]) -> tuple[str, str | None, str]:
    content = "".join(d.get("content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    name = next((c.function.name for c in calls if c.function.name), None)
    return content, name, "".join(c.function.arguments or "" for c in calls)


@pytest.mark.parametrize("chunking", [1, 3, 1000])
def test_stream_parser_splits_a_call_into_openai_deltas(chunking):
    text = ' {"name": "get_weather", "arguments": {"city": "Oslo}", "unit": {"x": "C"}} }'
    pieces = [text[i:i + chunking] for i in range(0, len(text), chunking)]
    stream = ToolCallStream("auto")
    deltas = _run(stream, pieces)
    content, name, arguments = _collect(deltas)
    assert content == "" and name == "get_weather"
    assert json.loads(arguments) == {"city": "Oslo}", "unit": {"x": "C"}}
    first = deltas[0]["tool_calls"][0]
    assert first.id.startswith("call_") and first.type == "function" and first.function.arguments == ""
    assert all(c.id is None for d in deltas[1:] for c in d["tool_calls"])
    assert finish_reason(stream, "eos_token") == "tool_calls" and finish_reason(stream, "length") == "length"


def test_stream_parser_text_and_truncated_calls():
    stream = ToolCallStream("auto")
    assert _collect(_run(stream, ["  ", " Hello {", "x}"])) == ("   Hello {x}", None, "")
    assert finish_reason(stream, "stop_sequence") == "stop"
    assert _collect(_run(ToolCallStream("text"), ['{"name": "x"'])) == ('{"name": "x"', None, "")
    assert _collect(_run(ToolCallStream("required"), ['{"name": "get_w'])) == ('{"name": "get_w', None, "")
    assert _collect(_run(ToolCallStream("auto"), ["  "])) == ("  ", None, "")


def test_tool_prompt_only_when_the_template_cannot_show_tools():
    tools = _request(tools=[WEATHER]).tools
    assert tool_prompt_suffix(tools, None, template_handles_tools=True) == ""
    suffix = tool_prompt_suffix(tools, None, template_handles_tools=False)
    assert suffix.startswith("\n---\n[") and '"get_weather"' in suffix
    assert tool_prompt_suffix(tools, "Use tools.", template_handles_tools=True) == "\n---\nUse tools."
