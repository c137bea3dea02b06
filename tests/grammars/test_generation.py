"""Constrained generation with a random-weight Llama (it babbles when free): 100 seeded samples per grammar.

Every output that ends by EOS must parse and validate against its JSON schema (`jsonschema`, formats checked) or
fully match its regex (`re.fullmatch`); outputs cut by the token limit must be prefixes of a valid output (the
automaton accepted every token, and the `regex` package's partial match agrees). The text is checked twice: from
the grammar's token bytes and from the tokenizer's own decoding. All grammars of a kind run in one batch: one
forward pass of every row per step.
"""
from __future__ import annotations

import codecs
import json
import re

import jsonschema
import pytest
import regex
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grammars.compiler import GrammarCompiler
from tests.grammars.cases import REGEXES, SCHEMAS
from tests.grammars.sampling import decode_bytes, sample_constrained

NUM_SAMPLES = 100
MAX_NEW_TOKENS = 56
MIN_EOS_ENDINGS = 3  # per grammar: a test where nothing ever completes would prove nothing
PROMPT = "Question: what is the answer? Answer:"
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


@pytest.fixture(scope="module")
def setup(tiny_llama_dir):
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    return model, tokenizer, GrammarCompiler(tokenizer, model.config.vocab_size, tokenizer.eos_token_id)


def _generate_all(setup, grammars: dict[str, dict], seed: int, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """name -> [(text, ended_by_eos)] for NUM_SAMPLES samples of each grammar, all in one batch."""
    model, tokenizer, compiler = setup
    compiled = {name: compiler.compile(compiler.parse(g)) for name, g in grammars.items()}
    rows = [compiled[name] for name in grammars for _ in range(NUM_SAMPLES)]
    prompt = tokenizer(PROMPT)["input_ids"]
    gens = sample_constrained(model, prompt, rows, max_new_tokens, seed=seed)
    results = {}
    for i, name in enumerate(grammars):
        results[name] = []
        for g in gens[i * NUM_SAMPLES:(i + 1) * NUM_SAMPLES]:
            text = _text(compiler, g.token_ids, complete=g.ended_by_eos)
            if g.ended_by_eos:
                _assert_tokenizer_agrees(tokenizer, prompt, g.token_ids, text)
            results[name].append((text, g.ended_by_eos))
    return results, compiled


def _text(compiler: GrammarCompiler, token_ids: list[int], complete: bool) -> str:
    data = decode_bytes(compiler.tokens, token_ids)
    # A cut output may end inside a multi-byte character: drop the incomplete tail.
    return data.decode() if complete else codecs.getincrementaldecoder("utf-8")().decode(data, final=False)


def _assert_tokenizer_agrees(tokenizer, prompt: list[int], token_ids: list[int], text: str) -> None:
    # The router decodes prompt + generated and keeps the difference (TGI's prefix offsets).
    decoded = tokenizer.decode(prompt + token_ids, skip_special_tokens=True)
    assert decoded[len(tokenizer.decode(prompt, skip_special_tokens=True)):] == text


def _assert_prefix(pattern: str, text: str) -> None:
    assert regex.fullmatch(pattern, text, partial=True), f"{text!r} is not a prefix of a match of {pattern!r}"


def _check_schema(schema: dict, pattern: str, outputs: list[tuple[str, bool]]) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
    assert sum(complete for _, complete in outputs) >= MIN_EOS_ENDINGS, "too few outputs completed"
    for text, complete in outputs:
        if complete:
            validator.validate(json.loads(text))
        else:
            _assert_prefix(pattern, text)


def _check_regex(pattern: str, outputs: list[tuple[str, bool]]) -> None:
    assert sum(complete for _, complete in outputs) >= MIN_EOS_ENDINGS, "too few outputs completed"
    for text, complete in outputs:
        if complete:
            assert re.fullmatch(pattern, text), f"{text!r} does not match {pattern!r}"
        else:
            _assert_prefix(pattern, text)


@pytest.fixture(scope="module")
def schema_outputs(setup):
    return _generate_all(setup, {n: {"type": "json", "value": s} for n, s in SCHEMAS.items()}, seed=1)


@pytest.fixture(scope="module")
def regex_outputs(setup):
    return _generate_all(setup, {n: {"type": "regex", "value": r} for n, r in REGEXES.items()}, seed=2)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_json_schema_outputs_validate(schema_outputs, name):
    results, compiled = schema_outputs
    _check_schema(SCHEMAS[name], compiled[name].regex, results[name])


@pytest.mark.parametrize("name", list(REGEXES))
def test_regex_outputs_match(regex_outputs, name):
    results, _ = regex_outputs
    _check_regex(REGEXES[name], results[name])


def test_prefix_alternation_reaches_every_branch(regex_outputs):
    # outlines-core's leftmost-first DFA would stop after "a" without anchoring: all three words must appear.
    results, _ = regex_outputs
    assert {text for text, complete in results["prefix_alternation"] if complete} == {"a", "ab", "abc"}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_all_grammars_more_seeds_longer(setup, seed):
    grammars = {n: {"type": "json", "value": s} for n, s in SCHEMAS.items()}
    grammars |= {n: {"type": "regex", "value": r} for n, r in REGEXES.items()}
    results, compiled = _generate_all(setup, grammars, seed, max_new_tokens=128)
    for name, grammar in grammars.items():
        if grammar["type"] == "regex":
            _check_regex(grammar["value"], results[name])
        else:
            _check_schema(grammar["value"], compiled[name].regex, results[name])
