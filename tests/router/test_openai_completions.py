"""/v1/completions through the openai SDK (real engine): prompt lists, n, echo, legacy logprobs, streaming, usage."""
from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types import Completion

PROMPTS = ["Question: Ken has 3 books and buys 4 more. How many books does Ken have?\nAnswer:", "Compute 12 * 3 ="]


def _create(client, **kwargs) -> Completion:
    response = client.completions.with_raw_response.create(model="tiny", **kwargs)
    body = json.loads(response.text)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    return response.parse()


def test_prompt_list_with_n_and_echo(client, tokenizer):
    completion = _create(client, prompt=PROMPTS, n=2, max_tokens=6, echo=True, seed=1)
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]  # prompt index * n + choice
    for c in completion.choices:
        assert c.text.startswith(PROMPTS[c.index // 2]) and c.finish_reason == "length"
    assert completion.choices[0].text != completion.choices[1].text  # seeds 1 and 2
    assert completion.usage.prompt_tokens == sum(len(tokenizer(p).input_ids) for p in PROMPTS)  # BOS included
    assert completion.usage.completion_tokens == 4 * 6


def test_legacy_logprobs_with_echo(client, tokenizer):
    completion = _create(client, prompt=PROMPTS[1], max_tokens=5, echo=True, logprobs=3, temperature=0)
    choice = completion.choices[0]
    lp = choice.logprobs
    prompt_ids = tokenizer(PROMPTS[1]).input_ids
    lengths = {len(lp.tokens), len(lp.token_logprobs), len(lp.top_logprobs), len(lp.text_offset)}
    assert lengths == {len(prompt_ids) + 5}
    assert lp.tokens[0] == "<s>" and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    generated = lp.top_logprobs[len(prompt_ids):]
    assert all(3 <= len(top) <= 4 for top in generated)  # top 3 plus the chosen token
    # greedy: the chosen token is the most likely one
    for token, value, top in zip(lp.tokens[len(prompt_ids):], lp.token_logprobs[len(prompt_ids):], generated):
        assert value == pytest.approx(max(top.values())) and top[token] == value
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[len(prompt_ids)] == len(PROMPTS[1])
    # offsets point into the returned text: each generated token's text starts there
    offsets = lp.text_offset[len(prompt_ids):] + [len(choice.text)]
    pieces = [choice.text[a:b] for a, b in zip(offsets, offsets[1:])]
    assert "".join(pieces) == choice.text[len(PROMPTS[1]):]


def test_token_id_prompts_and_greedy_parity(client, tokenizer):
    ids = tokenizer(PROMPTS[0]).input_ids
    by_text = _create(client, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    by_ids = _create(client, prompt=[ids, ids[:5]], max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids) + 5


def test_stream_with_usage_matches_non_stream(client):
    kwargs = dict(prompt=PROMPTS, n=2, max_tokens=7, seed=3, echo=True, logprobs=1)
    completion = _create(client, **kwargs)
    chunks = list(client.completions.create(model="tiny", stream=True, stream_options={"include_usage": True},
                                            **kwargs))
    texts, finish, logprob_counts = {}, {}, {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.logprobs is not None:
            logprob_counts[choice.index] = logprob_counts.get(choice.index, 0) + len(choice.logprobs.tokens)
        if choice.finish_reason is not None:
            finish[choice.index] = choice.finish_reason
    assert texts == {c.index: c.text for c in completion.choices}
    assert finish == {i: "length" for i in range(4)}
    assert logprob_counts == {c.index: len(c.logprobs.tokens) for c in completion.choices}
    assert chunks[-1].choices == [] and chunks[-1].usage == completion.usage


def test_stop_is_cut(client):
    full = _create(client, prompt=PROMPTS[0], max_tokens=20, temperature=0).choices[0].text
    stop = full[5:8]
    cut = _create(client, prompt=PROMPTS[0], max_tokens=20, temperature=0, stop=stop).choices[0]
    assert cut.text == full[:full.find(stop)] and cut.finish_reason == "stop"


def test_errors(client, server):
    with pytest.raises(openai.UnprocessableEntityError, match="Suffix is not supported"):
        client.completions.create(model="tiny", prompt="x", suffix="y")
    with pytest.raises(openai.UnprocessableEntityError, match="maximum allowed batch size of 4"):
        client.completions.create(model="tiny", prompt=["a"] * 5)
    with pytest.raises(openai.UnprocessableEntityError, match="prompt"):
        client.completions.create(model="tiny", prompt=[])
    with pytest.raises(openai.UnprocessableEntityError, match="outside the vocabulary"):
        client.completions.create(model="tiny", prompt=[1, 99999])
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x"})
    assert response.status_code == 401
