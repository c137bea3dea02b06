"""/v1/chat/completions through the openai SDK against the real engine on loopback: n, logprobs, stop, seeds,
response_format, usage, chunk types, errors."""
from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.router.conftest import API_KEY

QUESTION = [{"role": "user", "content": "Natalia has 48 clips. How many clips does she have?"}]


def _raw(client: openai.OpenAI, **kwargs) -> tuple[dict, ChatCompletion]:
    """The body as sent (strictly validated against the SDK's own type) and the SDK's object."""
    response = client.chat.completions.with_raw_response.create(model="tiny", **kwargs)
    body = json.loads(response.text)
    ChatCompletion.model_validate(body, strict=True)
    return body, response.parse()


def _stream(client: openai.OpenAI, **kwargs) -> list[ChatCompletionChunk]:
    chunks = list(client.chat.completions.create(model="tiny", stream=True, **kwargs))
    for chunk in chunks:  # the SDK parsed them leniently; the wire shape must also pass strict validation
        ChatCompletionChunk.model_validate(chunk.model_dump(exclude_unset=True), strict=True)
    return chunks


def _texts(chunks: list[ChatCompletionChunk]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return texts


def test_n_choices_logprobs_and_exact_usage(client, tokenizer):
    body, completion = _raw(client, messages=QUESTION, n=3, max_tokens=12, seed=11, logprobs=True, top_logprobs=20)
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["system_fingerprint"] and body["created"] > 0
    assert [c.index for c in completion.choices] == [0, 1, 2]
    texts = [c.message.content for c in completion.choices]
    assert len(set(texts)) == 3  # independent sequences (seeds 11, 12, 13)
    # prompt_tokens: the templated prompt (documented default template), counted by the tokenizer itself
    expected_prompt = "<s>User: " + QUESTION[0]["content"] + "\nAssistant:"
    assert completion.usage.prompt_tokens == len(tokenizer(expected_prompt, add_special_tokens=False).input_ids)
    generated = 0
    for choice in completion.choices:
        content = choice.logprobs.content
        generated += len(content)
        assert choice.finish_reason == "length" and len(content) == 12
        for entry in content:
            tops = [t.logprob for t in entry.top_logprobs]
            assert len(tops) == 20 and tops == sorted(tops, reverse=True) and entry.logprob <= tops[0] + 1e-6
            assert entry.bytes == list(entry.token.encode()) or len(entry.bytes) == 1  # byte-fallback pieces
    assert completion.usage.completion_tokens == generated == 36
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + generated


def test_completion_tokens_count_the_eos_token(client, tokenizer):
    # Sampling many short answers: some end with EOS before max_tokens; usage must count exactly what was generated.
    kwargs = dict(messages=QUESTION, max_tokens=40, seed=3, logprobs=True, temperature=1.5)
    _, completion = _raw(client, n=16, **kwargs)
    assert completion.usage.completion_tokens == sum(len(c.logprobs.content) for c in completion.choices)
    stopped = [c for c in completion.choices if c.finish_reason == "stop"]
    assert stopped and all(c.logprobs.content[-1].token == "</s>" for c in stopped)  # EOS generated and counted
    assert all(len(c.logprobs.content) == 40 for c in completion.choices if c.finish_reason == "length")
    # The same prompt ids sent as a token-id prompt to /v1/completions (same seed) give the same sequence.
    ids = tokenizer("<s>User: " + QUESTION[0]["content"] + "\nAssistant:", add_special_tokens=False).input_ids
    first = completion.choices[0]
    legacy = client.completions.create(model="tiny", prompt=ids, max_tokens=40, seed=3, temperature=1.5, logprobs=0)
    assert legacy.usage.prompt_tokens == completion.usage.prompt_tokens == len(ids)
    assert legacy.usage.completion_tokens == len(first.logprobs.content) < 40
    assert legacy.choices[0].logprobs.token_logprobs == pytest.approx([e.logprob for e in first.logprobs.content])


def test_stream_matches_non_stream_for_the_same_seed(client):
    kwargs = dict(messages=QUESTION, n=3, max_tokens=10, seed=5, temperature=0.8, top_p=1.0)
    _, completion = _raw(client, **kwargs)
    chunks = _stream(client, stream_options={"include_usage": True}, **kwargs)
    assert _texts(chunks) == {c.index: c.message.content for c in completion.choices}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    first = {}
    finishes = {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None and len(chunk.choices) == 1
        choice = chunk.choices[0]
        first.setdefault(choice.index, choice.delta)
        if choice.finish_reason is not None:
            assert choice.index not in finishes
            finishes[choice.index] = choice.finish_reason
    assert all(delta.role == "assistant" for delta in first.values())
    assert finishes == {0: "length", 1: "length", 2: "length"}
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == completion.usage.model_dump()


def test_seed_reproducibility_and_greedy(client):
    same = [_raw(client, messages=QUESTION, max_tokens=15, seed=42)[1].choices[0].message.content for _ in range(2)]
    other = _raw(client, messages=QUESTION, max_tokens=15, seed=43)[1].choices[0].message.content
    assert same[0] == same[1] and other != same[0]
    greedy = {_raw(client, messages=QUESTION, max_tokens=15, temperature=0, seed=s)[1].choices[0].message.content
              for s in (1, 2)}
    assert len(greedy) == 1  # temperature 0: the seed does not matter


def test_stop_is_cut_from_the_text_even_inside_a_token(client):
    kwargs = dict(messages=QUESTION, max_tokens=30, temperature=0)
    full = _raw(client, **kwargs)[1].choices[0].message.content
    stop = full[7:10]  # three characters from the middle: may start or end inside a token
    cut = full[:full.find(stop)]
    _, completion = _raw(client, stop=[stop, "never-generated"], **kwargs)
    assert completion.choices[0].message.content == cut and completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens < 30
    chunks = _stream(client, stop=stop, **kwargs)
    assert _texts(chunks) == {0: cut}
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


SCHEMA = {"type": "object", "properties": {
    "answer": {"enum": ["yes", "no", "maybe"]}, "sure": {"type": "boolean"},
    "note": {"type": "string", "maxLength": 12},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
    "required": ["answer", "sure", "note", "tags"], "additionalProperties": False}


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_json_schema(client, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    kwargs = dict(messages=QUESTION, max_tokens=150, seed=9, n=2, response_format=fmt)
    if stream:
        texts = list(_texts(_stream(client, **kwargs)).values())
    else:
        texts = [c.message.content for c in _raw(client, **kwargs)[1].choices]
    assert len(texts) == 2
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)


def test_response_format_json_object_and_tgi_form(client):
    text = _raw(client, messages=QUESTION, max_tokens=200, seed=1, temperature=0.5,
                response_format={"type": "json_object"})[1].choices[0].message.content
    assert isinstance(json.loads(text), dict)
    tgi = {"type": "json", "value": {"type": "object", "properties": {"n": {"enum": [1, 2, 3]}}, "required": ["n"]}}
    text = _raw(client, messages=QUESTION, max_tokens=50, response_format=tgi)[1].choices[0].message.content
    assert json.loads(text)["n"] in (1, 2, 3)
    regex = {"type": "regex", "value": r"(yes|no), [0-9]{2} eggs"}
    text = _raw(client, messages=QUESTION, max_tokens=50, response_format=regex)[1].choices[0].message.content
    assert re.fullmatch(regex["value"], text)


def test_message_forms_and_logit_bias(client, tokenizer):
    target = tokenizer.convert_tokens_to_ids("▁eggs")
    messages = [{"role": "developer", "content": "Be short."},
                {"role": "user", "content": [{"type": "text", "text": "Count "}, {"type": "text", "text": "eggs"}]}]
    _, completion = _raw(client, messages=messages, max_completion_tokens=4, logit_bias={str(target): 100},
                         presence_penalty=0.5, frequency_penalty=0.5, user="tester", logprobs=True)
    assert completion.usage.completion_tokens == 4
    # The bias dominates a random model's near-flat logits, even against the penalties.
    assert all(entry.token == " eggs" for entry in completion.choices[0].logprobs.content)
    expected = "<s>System: Be short.\nUser: Count eggs\nAssistant:"
    assert completion.usage.prompt_tokens == len(tokenizer(expected, add_special_tokens=False).input_ids)


def test_continue_a_final_assistant_message(client, tokenizer):
    messages = QUESTION + [{"role": "assistant", "content": "She has"}]
    _, completion = _raw(client, messages=messages, max_tokens=3)
    expected = "<s>User: " + QUESTION[0]["content"] + "\nAssistant: She has"
    assert completion.usage.prompt_tokens == len(tokenizer(expected, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_logprobs=21, logprobs=True), "top_logprobs"),
    (dict(logit_bias={"5000": 1}), "outside the vocabulary"),
    (dict(logit_bias={"abc": 1}), "logit_bias keys"),
    (dict(temperature=-1), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}),
     "grammar is not valid"),
    (dict(tool_choice="required"), "Tool error"),
])
def test_user_errors_are_422_with_an_openai_body(client, kwargs, message):
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(model="tiny", messages=QUESTION, **kwargs)
    assert message in info.value.message
    assert set(info.value.body) >= {"message", "type", "param", "code"}


def test_bad_json_and_auth_errors(server, client):
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny", messages=QUESTION)
    with pytest.raises(openai.UnprocessableEntityError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[])
    import httpx

    response = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert response.status_code == 400 and "Failed to parse" in response.json()["error"]["message"]


def test_invocations_dispatches_messages(server, auth_headers):
    import httpx

    response = httpx.post(f"{server.url}/invocations", headers=auth_headers,
                          json={"messages": QUESTION, "max_tokens": 3})
    assert response.status_code == 200
    ChatCompletion.model_validate(response.json(), strict=True)
    response = httpx.post(f"{server.url}/invocations", headers=auth_headers,
                          json={"messages": QUESTION, "tool_choice": "required"})
    assert response.status_code == 422 and response.json()["error"]["message"].startswith("Tool error:")
    response = httpx.post(f"{server.url}/invocations", headers=auth_headers, json={"prompt": "x", "suffix": "y"})
    assert response.status_code == 422 and response.json()["error_type"] == "suffix not supported"


def test_bundled_model_chats_in_its_question_answer_format():
    """The bundled model's chat_template.jinja renders the conversation as the Question/Answer text it was trained on."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from router.chat_template import load_chat_template

    model = Path(__file__).resolve().parents[2] / "models" / "rho-math-tiny"
    template = load_chat_template(model, AutoTokenizer.from_pretrained(model))
    text = template.render([{"role": "system", "content": "Solve."}, {"role": "user", "content": "What is 2+3?"},
                            {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."},
                            {"role": "user", "content": "And 4+4?"}])
    assert text == ("<s> Solve.\n\nQuestion: What is 2+3?\nAnswer: 2 + 3 = 5. The answer is 5.\n\n"
                    "Question: And 4+4?\nAnswer:")
