"""Tool calling on /v1/chat/completions (openai SDK, real engine): auto, required, named, none; streamed deltas;
tool results sent back reach the template with their ids."""
from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.router.conftest import API_KEY

WEATHER_PARAMS = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "array", "items": {"enum": [1, 2, 3]}, "maxItems": 2}},
    "required": ["city", "unit"]}
CONVERT_PARAMS = {"type": "object", "properties": {"exact": {"type": "boolean"}, "to": {"enum": ["km", "mi"]}},
                  "required": ["exact", "to"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": WEATHER_PARAMS}},
         {"type": "function", "function": {"name": "convert", "parameters": CONVERT_PARAMS}}]
PARAMS = {"get_weather": WEATHER_PARAMS, "convert": CONVERT_PARAMS}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def brace_ids(tiny_llama_dir) -> list[str]:
    """Token ids whose text opens a JSON object (`{`, `▁{`, ...): a logit bias on them steers `auto`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    ids = [i for i in range(len(tokenizer)) if tokenizer.convert_ids_to_tokens(i).lstrip("▁").startswith("{")]
    assert ids
    return [str(i) for i in ids]


def _check_call(call, allowed: set[str]) -> dict:
    assert call.id.startswith("call_") and call.type == "function" and call.function.name in allowed
    arguments = json.loads(call.function.arguments)  # a JSON string, as OpenAI sends it
    jsonschema.validate(arguments, PARAMS[call.function.name])
    return arguments


def _create(client, **kwargs) -> ChatCompletion:
    kwargs = {"messages": MESSAGES, "tools": TOOLS, "max_tokens": 120, **kwargs}
    response = client.chat.completions.with_raw_response.create(model="tiny", **kwargs)
    ChatCompletion.model_validate(json.loads(response.text), strict=True)
    return response.parse()


def _assemble(chunks) -> tuple[dict, dict, dict]:
    """Per choice: (content, {id, name, arguments}, finish_reason) from streamed deltas."""
    content, calls, finish = {}, {}, {}
    for chunk in chunks:
        for choice in chunk.choices:
            i = choice.index
            content[i] = content.get(i, "") + (choice.delta.content or "")
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(i, {"id": None, "name": None, "arguments": ""})
                assert delta.index == 0
                if delta.id is not None:
                    assert call["id"] is None  # the id and name come once, in the first delta
                    call.update(id=delta.id, name=delta.function.name)
                call["arguments"] += delta.function.arguments or ""
            if choice.finish_reason is not None:
                assert i not in finish
                finish[i] = choice.finish_reason
    return content, calls, finish


@pytest.mark.parametrize("choice, allowed", [
    ("required", {"get_weather", "convert"}),
    ({"type": "function", "function": {"name": "convert"}}, {"convert"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
])
def test_required_and_named_calls(client, choice, allowed):
    completion = _create(client, tool_choice=choice, n=3, seed=4)
    for c in completion.choices:
        assert c.finish_reason == "tool_calls" and c.message.content is None and len(c.message.tool_calls) == 1
        _check_call(c.message.tool_calls[0], allowed)
    assert completion.usage.completion_tokens > 0


def strict_id(chunks, index: int) -> str:
    deltas = (d for c in chunks for ch in c.choices if ch.index == index for d in ch.delta.tool_calls or [])
    return next(d.id for d in deltas if d.id)


def test_streamed_calls_match_non_streamed(client, server):
    kwargs = dict(tool_choice="required", n=2, seed=21, temperature=0.7)
    completion = _create(client, **kwargs)
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, tools=TOOLS, max_tokens=120,
                                                 stream=True, **kwargs))
    content, calls, finish = _assemble(chunks)
    assert finish == {0: "tool_calls", 1: "tool_calls"} and not any(content.values())
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"messages": MESSAGES, "tools": TOOLS, "max_tokens": 120, "stream": True, **kwargs}) as r:
        wire = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert wire[-1] == "[DONE]"
    strict = [ChatCompletionChunk.model_validate(json.loads(line), strict=True) for line in wire[:-1]]
    assert _assemble(strict)[1] == {i: {**call, "id": strict_id(strict, i)} for i, call in calls.items()}
    for c in completion.choices:
        call = c.message.tool_calls[0]
        assert calls[c.index]["name"] == call.function.name and calls[c.index]["id"].startswith("call_")
        assert json.loads(calls[c.index]["arguments"]) == json.loads(call.function.arguments)


def test_auto_answers_with_a_call_or_with_text(client, brace_ids):
    towards_call = _create(client, tool_choice="auto", logit_bias={i: 100 for i in brace_ids}, seed=2)
    choice = towards_call.choices[0]
    assert choice.finish_reason == "tool_calls"
    _check_call(choice.message.tool_calls[0], {"get_weather", "convert"})
    towards_text = _create(client, logit_bias={i: -100 for i in brace_ids}, seed=2, max_tokens=8)  # auto: default
    choice = towards_text.choices[0]
    assert choice.message.tool_calls is None and choice.message.content and choice.finish_reason == "length"
    assert not choice.message.content.lstrip().startswith("{")
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, tools=TOOLS, stream=True,
                                                 max_tokens=120, seed=2, logit_bias={i: 100 for i in brace_ids}))
    _, calls, finish = _assemble(chunks)
    assert finish == {0: "tool_calls"}
    assert json.loads(calls[0]["arguments"]) == json.loads(choice_args(towards_call))


def choice_args(completion: ChatCompletion) -> str:
    return completion.choices[0].message.tool_calls[0].function.arguments


def test_tool_choice_none_is_plain_chat(client, brace_ids):
    completion = _create(client, tool_choice="none", max_tokens=6, logit_bias={i: 100 for i in brace_ids})
    assert completion.choices[0].message.tool_calls is None and completion.choices[0].finish_reason == "length"
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6,
                                           logit_bias={i: 100 for i in brace_ids})
    assert completion.usage.prompt_tokens == plain.usage.prompt_tokens  # tools are not shown to the model


def test_tool_results_reach_the_template_with_their_ids(client, tiny_llama_dir):
    from transformers import AutoTokenizer

    first = _create(client, tool_choice={"type": "function", "function": {"name": "convert"}}, seed=8)
    call = first.choices[0].message.tool_calls[0]
    messages = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "21 km"}]
    second = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, max_tokens=3,
                                            tool_choice="none")
    expected = ("<s>User: What is the weather in Paris?\n"
                f'Assistant: {json.dumps({"name": "convert", "arguments": json.loads(call.function.arguments)})}\n'
                f"Tool ({call.id}): 21 km\nAssistant:")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    assert second.usage.prompt_tokens == len(tokenizer(expected, add_special_tokens=False).input_ids)


def test_tool_errors(client):
    with pytest.raises(openai.UnprocessableEntityError, match="Tool with name nope not found"):
        _create(client, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(openai.UnprocessableEntityError, match="mutually exclusive"):
        _create(client, tool_choice="required", response_format={"type": "json_object"})
    with pytest.raises(openai.UnprocessableEntityError, match="function.name"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, tools=[
            {"type": "function", "function": {"name": "bad name!"}}])
