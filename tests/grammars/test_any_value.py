"""Schemas with unconstrained values (`{}`, pydantic's `Any`, bare objects and arrays) generate documents that
validate (issue #17: a bare number came out for `{"type":"object","properties":{"data":{}},...}`): 100 seeded
samples per schema with a random-weight Llama, on llguidance (the engine these schemas get) and on the
outlines-core fallback (our grouped regexes). Also: which engine each schema gets, and the regex itself."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grammars.compiler import GrammarCompiler
from grammars.spec import parse_grammar, regex_of
from tests.grammars.cases import ANY_VALUE_SCHEMAS, SCHEMAS
from tests.grammars.sampling import decode_bytes, sample_constrained

NUM_SAMPLES = 100
MAX_NEW_TOKENS = 48
PROMPT = "Question: what is the answer? Answer:"


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama_dir):
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    return AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval(), tokenizer


def _outputs(model, tokenizer, compiler, schemas: dict, seed: int) -> dict[str, list[tuple[str, bool]]]:
    compiled = {n: compiler.compile(compiler.parse({"type": "json", "value": s})) for n, s in schemas.items()}
    rows = [compiled[n] for n in schemas for _ in range(NUM_SAMPLES)]
    prompt = tokenizer(PROMPT)["input_ids"]
    gens = sample_constrained(model, prompt, rows, MAX_NEW_TOKENS, seed=seed)
    out: dict[str, list[tuple[str, bool]]] = {n: [] for n in schemas}
    for i, name in enumerate(schemas):
        for g in gens[i * NUM_SAMPLES:(i + 1) * NUM_SAMPLES]:
            out[name].append((decode_bytes(compiler.tokens, g.token_ids).decode(errors="replace"), g.ended_by_eos))
    return out


@pytest.mark.parametrize("use_llguidance", [True, False], ids=["llguidance", "outlines"])
def test_unconstrained_values_validate(model_and_tokenizer, use_llguidance):
    model, tokenizer = model_and_tokenizer
    compiler = GrammarCompiler(tokenizer, model.config.vocab_size, tokenizer.eos_token_id, compile_timeout_s=120,
                               use_llguidance=use_llguidance)
    try:
        results = _outputs(model, tokenizer, compiler, ANY_VALUE_SCHEMAS, seed=3)
    finally:
        compiler.close()
    for name, outputs in results.items():
        validator = jsonschema.Draft202012Validator(ANY_VALUE_SCHEMAS[name])
        complete = [text for text, ended in outputs if ended]
        assert len(complete) >= 3, f"{name}: too few outputs completed"
        for text in complete:
            validator.validate(json.loads(text))
        if ANY_VALUE_SCHEMAS[name].get("type") in ("object", "array"):
            # cut outputs too: every one is on its way to an object / array, never a bare value
            assert all(text.lstrip()[:1] in ("{", "[") for text, _ in outputs if text.strip()), name


def test_outlines_regex_for_any_property_is_one_object():
    # outlines-core's own `{}` regex is an ungrouped alternation: "1" or "null" alone matched the object schema.
    regex = regex_of(parse_grammar({"type": "json", "value": ANY_VALUE_SCHEMAS["two_any_properties"]}))
    for text in ("1", " 418.0571", "null", '"x"', "[1]", '{"data": 1}'):
        assert not re.fullmatch(regex, text), text
    for text in ('{"data":1,"meta":null}', ' {"data": {"a": [1, "b"]}, "meta": []}'):
        assert re.fullmatch(regex, text), text


def test_engine_choice(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    compiler = GrammarCompiler(tokenizer, len(tokenizer), tokenizer.eos_token_id)
    try:
        for name, schema in ANY_VALUE_SCHEMAS.items():
            assert compiler.engine_for(parse_grammar({"type": "json", "value": schema})) == "llguidance", name
        for name, schema in SCHEMAS.items():
            expected = "llguidance" if name in ("any_json", "any_object") else "outlines"
            assert compiler.engine_for(parse_grammar({"type": "json", "value": schema})) == expected, name
        assert compiler.engine_for(parse_grammar({"type": "regex", "value": "a+"})) == "outlines"
        many = {"type": "object", "properties": {f"f{i}": {"type": "integer"} for i in range(20)}}
        assert compiler.engine_for(parse_grammar({"type": "json", "value": many})) == "llguidance"
    finally:
        compiler.close()
