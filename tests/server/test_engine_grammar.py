"""Constrained decoding through the engine: the sampler's mask, EOS only where the grammar may end, `length` at the
token limit, and a grammar state that survives preemption (recompute keeps the automaton position)."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from server.protocol import EngineRequest, FinishReason, SamplingParams

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def run(engine, compiler, grammar, n, max_new, seed0=0):
    compiled = compiler.compile(compiler.parse(grammar))
    prompt = tuple(engine.checkpoint.tokenizer("Question: who?")["input_ids"])
    reqs = [EngineRequest(f"g{i}", prompt, SamplingParams(max_new_tokens=max_new, do_sample=True, seed=seed0 + i,
                                                          grammar=compiled)) for i in range(n)]
    out = engine.generate(reqs)
    tok = engine.checkpoint.tokenizer
    return [(tok.decode([e.token_id for e in out[r.request_id]], skip_special_tokens=True),
             out[r.request_id][-1].finish_reason) for r in reqs]


def test_json_schema_outputs_validate(make_engine, compiler):
    engine = make_engine()
    results = run(engine, compiler, {"type": "json", "value": SCHEMA}, 16, 60)
    finished = [text for text, reason in results if reason == FinishReason.EOS_TOKEN]
    assert finished, "no constrained generation reached EOS within 60 tokens"
    for text in finished:
        jsonschema.validate(json.loads(text), SCHEMA)
    for text, reason in results:
        assert reason in (FinishReason.EOS_TOKEN, FinishReason.LENGTH)
        assert text.startswith("{")


def test_regex_under_preemption(make_engine, compiler):
    # A pool too small for all 16 sequences: preempted ones are recomputed and must keep their automaton state.
    engine = make_engine(max_batch_total_tokens=160, block_size=16)
    pattern = r"[0-9]{1,3}(\.[0-9]{1,2})? (apples|pears)"
    results = run(engine, compiler, {"type": "regex", "value": pattern}, 16, 24)
    for text, reason in results:
        if reason == FinishReason.EOS_TOKEN:
            assert re.fullmatch(pattern, text), text
        else:
            assert reason == FinishReason.LENGTH
    assert engine.block_manager.num_used_blocks == 0


def test_properties_come_in_the_schema_order(make_engine, compiler):
    engine = make_engine()
    schema = {"type": "object", "properties": {"zeta": {"type": "boolean"}, "alpha": {"type": "boolean"}},
              "required": ["zeta", "alpha"], "additionalProperties": False}
    for text, reason in run(engine, compiler, {"type": "json", "value": schema}, 4, 40):
        assert text.lstrip().startswith('{"zeta"') or text.lstrip().startswith('{ "zeta"'), text


def test_number_and_integer_bounds_hold(make_engine, compiler):
    engine = make_engine()
    schema = {"type": "object", "properties": {
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "exclusiveMinimum": 10},
        "delta": {"type": "number", "minimum": -5.5, "exclusiveMaximum": 0}},
        "required": ["confidence", "count", "delta"], "additionalProperties": False}
    results = run(engine, compiler, {"type": "json", "value": schema}, 16, 60, seed0=100)
    finished = [text for text, reason in results if reason == FinishReason.EOS_TOKEN]
    assert finished
    for text in finished:
        jsonschema.validate(json.loads(text), schema)
