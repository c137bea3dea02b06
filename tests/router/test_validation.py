"""Every validation rule with its exact TGI message (our compatibility decisions where DESIGN.md says so),
checked on the real tokenizer, plus the order in which rules apply and their HTTP mapping (422 body)."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from router.config import RouterConfig
from router.errors import ValidationError
from router.schemas import GenerateParameters, GrammarParam
from router.state import build_state

P = "Input validation error: "
CASES = [
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"temperature": 0.0}, "`temperature` must be strictly positive"),
    ({"temperature": -1.0}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"frequency_penalty": -2.1}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"presence_penalty": 3.0}, "`presence_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and <= 1.0"),
    ({"top_p": 1.5}, "`top_p` must be > 0.0 and <= 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 0.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"top_k": -5}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 63. Given: 0"),
    ({"truncate": 64}, "`truncate` must be strictly positive and less than 63. Given: 64"),
    ({"max_new_tokens": 60}, "`inputs` tokens + `max_new_tokens` must be <= 64. Given: {n} `inputs` tokens and 60 "
                             "`max_new_tokens`"),
    ({"adapter_id": "my-lora"}, None),  # message names the adapter (checked below)
    ({"grammar": {"type": "regex", "value": ""}}, "grammar is not valid: a regex grammar needs a non-empty "
                                                  "string `value`"),
]


@pytest.fixture(scope="module")
def state(engine_client):
    return build_state(engine_client, RouterConfig(max_total_tokens=64))


def validate(state, inputs, params: dict, stream: bool = False):
    return asyncio.run(state.validator.validate(inputs, GenerateParameters(**params), stream=stream))


@pytest.mark.parametrize("params,message", CASES)
def test_rule_message(state, params, message):
    with pytest.raises(ValidationError) as e:
        validate(state, "one two three", params)
    assert e.value.status == 422 and e.value.error_type == "validation"
    if message is None:
        assert "my-lora" in e.value.message and "not loaded" in e.value.message
    else:
        n = len(state.tokenizer("one two three")["input_ids"])
        assert e.value.message == P + message.replace("{n}", str(n))


def test_valid_edges_accepted(state):
    # Compatibility decisions: top_p = 1.0 means off; OpenAI penalty ranges include the ends.
    v = validate(state, "one", {"top_p": 1.0, "frequency_penalty": 2.0, "presence_penalty": -2.0,
                                "max_new_tokens": 3, "typical_p": 0.5, "top_k": 1, "truncate": 63})
    assert v.params.top_p == 1.0 and v.params.presence_penalty == -2.0 and v.max_new_tokens == 3


def test_stream_only_rules(state):
    with pytest.raises(ValidationError, match="`best_of` != 1 is not supported when streaming tokens"):
        validate(state, "x", {"best_of": 2, "do_sample": True}, stream=True)
    with pytest.raises(ValidationError, match="`decoder_input_details` == true is not supported when streaming"):
        validate(state, "x", {"decoder_input_details": True}, stream=True)


def test_input_rules(state):
    with pytest.raises(ValidationError) as e:
        validate(state, "", {})
    assert e.value.message == P + "`inputs` cannot be empty"
    long_text = " ".join(["word"] * 200)
    with pytest.raises(ValidationError) as e:
        validate(state, long_text, {"max_new_tokens": 1})
    assert e.value.message.startswith(P + "`inputs` tokens + `max_new_tokens` must be <= 64. Given: ")
    n = len(state.tokenizer(long_text)["input_ids"])
    with pytest.raises(ValidationError) as e:  # no max_new_tokens: 0 are left, and the total is still over (TGI)
        validate(state, long_text, {})
    assert e.value.message == P + f"`inputs` tokens + `max_new_tokens` must be <= 64. Given: {n} `inputs` tokens " \
                                  "and 0 `max_new_tokens`"
    with pytest.raises(ValidationError) as e:  # fits the total with 0 new tokens: the input length rule speaks
        validate(state, [5] * 64, {})
    assert e.value.message == P + "`inputs` must have less than 63 tokens. Given: 64"


def test_best_of_zero_means_one(state):
    assert validate(state, "x", {"best_of": 0}).best_of == 1  # TGI checks best_of only when it is > 1


def test_budget_checks_at_most_1024_new_tokens(engine_client):
    big = build_state(engine_client, RouterConfig(max_total_tokens=1100))
    valid = validate(big, "x", {"max_new_tokens": 100000})
    assert valid.max_new_tokens == 1100 - len(valid.prompt_token_ids)  # generate up to the total
    assert validate(big, "x", {"max_new_tokens": 7}).max_new_tokens == 7


def test_rule_order_first_failure_wins(state):
    with pytest.raises(ValidationError) as e:
        validate(state, "", {"temperature": 0, "top_p": 5, "top_k": 0})
    assert e.value.message == P + "`temperature` must be strictly positive"
    with pytest.raises(ValidationError) as e:
        validate(state, "", {"top_p": 5, "top_k": 0, "max_new_tokens": 0})
    assert "`top_p`" in e.value.message


def test_grammar_is_compiled(state):
    v = validate(state, "x", {"grammar": GrammarParam(type="regex", value="[0-9]{3}").model_dump(),
                              "max_new_tokens": 4})
    assert v.params.grammar is not None


def test_grammar_not_supported_when_disabled(engine_client):
    off = build_state(engine_client, RouterConfig(disable_grammar_support=True))
    with pytest.raises(ValidationError) as e:
        validate(off, "x", {"grammar": {"type": "regex", "value": "a"}})
    assert e.value.message == P + "grammar is not supported"


def test_http_422_body(server, auth_headers):
    r = httpx.post(server.url + "/generate", headers=auth_headers, timeout=30,
                   json={"inputs": "x", "parameters": {"top_n_tokens": 9}})
    assert r.status_code == 422
    assert r.json() == {"error": P + "`top_n_tokens` must be >= 0 and <= 5. Given: 9", "error_type": "validation"}


@pytest.mark.parametrize("params,samples", [
    ({"temperature": 1.0}, False),  # a warper at its neutral value: greedy (TGI), so no seed is reported
    ({"top_p": 1.0, "seed": 5}, False),
    ({"temperature": 0.7}, True), ({"top_k": 5}, True), ({"do_sample": True}, True),
])
def test_reported_seed_follows_whether_the_engine_samples(state, params, samples):
    v = validate(state, "one", {"max_new_tokens": 2, **params})
    assert v.params.is_sampling is samples
    assert (v.seed is not None) is samples and (not samples or v.seed == v.params.seed)
