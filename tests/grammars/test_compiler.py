"""GrammarCompiler: TGI's grammar shapes and error texts, the cache, the compile timeout, compiling off the loop."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from transformers import AutoTokenizer

from grammars.compiler import GrammarCompiler, GrammarError, GrammarSpec
from grammars.mask import GrammarMasks

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def _slow_schema(num_properties: int = 60) -> dict:
    # Many optional properties: the regex enumerates their orders (TGI #2902); about 1 s at vocabulary 1k.
    kinds = ["integer", "number", "string", "boolean"]
    return {"type": "object", "properties": {f"field_{i}": {"type": kinds[i % 4]} for i in range(num_properties)}}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture()
def compiler(tokenizer):
    c = GrammarCompiler(tokenizer, len(tokenizer), tokenizer.eos_token_id, cache_size=2, compile_timeout_s=30)
    yield c
    c.close()


@pytest.mark.parametrize("grammar", [
    {"type": "json", "value": SCHEMA},
    {"type": "json", "value": json.dumps(SCHEMA)},
    {"type": "json_object", "value": SCHEMA},
    {"type": "json_schema", "value": {"name": "thing", "schema": SCHEMA}},
])
def test_tgi_json_shapes_give_one_spec(compiler, grammar):
    spec = compiler.parse(grammar)
    assert spec.kind == "json" and json.loads(spec.value) == SCHEMA
    assert list(json.loads(spec.value)["properties"]) == list(SCHEMA["properties"])  # generation order kept
    assert spec.cache_key == ("json", json.dumps(SCHEMA, sort_keys=True, separators=(",", ":")))


@pytest.mark.parametrize("grammar", [{"type": "json_object"}, {"type": "json", "value": {}},
                                     {"type": "json", "value": "{}"}, {"type": "json", "value": True}])
def test_any_json_forms(compiler, grammar):
    assert compiler.parse(grammar).cache_key == ("json", "{}")


@pytest.mark.parametrize("grammar, message", [
    ({"type": "json", "value": "{not json"},
     "grammar is not valid: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ({"type": "json", "value": {"type": "integr"}}, "grammar is not valid: 'integr' is not valid under any of the given schemas"),
    ({"type": "json", "value": {"properties": {"a": {"minimum": "3"}}}}, "grammar is not valid: '3' is not of type 'number'"),
    ({"type": "json", "value": 5}, "grammar is not supported"),
    ({"type": "json", "value": "[1, 2]"}, "grammar is not supported"),
    ({"type": "json_schema", "value": {"name": "x"}}, 'grammar is not valid: a json_schema grammar needs `value` = {"name"?, "schema"}'),
    ({"type": "regex", "value": ""}, "grammar is not valid: a regex grammar needs a non-empty string `value`"),
    ({"type": "yaml", "value": "a"},
     "grammar is not valid: unknown grammar type 'yaml' (expected json, json_object, json_schema or regex)"),
    ({"value": "a"}, 'grammar is not valid: expected an object {"type": ..., "value": ...}'),
])
def test_parse_errors_have_tgi_texts(compiler, grammar, message):
    with pytest.raises(GrammarError) as e:
        compiler.parse(grammar)
    assert str(e.value) == message


@pytest.mark.parametrize("grammar, message", [
    ({"type": "json", "value": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}},
     "cannot compile regex from schema: Invalid reference path: $defs"),
    ({"type": "regex", "value": "(ab"},
     "grammar is not valid: invalid regex: missing ) at position 3"),
    ({"type": "regex", "value": "[a-"}, "grammar is not valid: invalid regex: unterminated character set at position 3"),
])
def test_compile_errors_have_tgi_texts(compiler, grammar, message):
    with pytest.raises(GrammarError) as e:
        compiler.compile(compiler.parse(grammar))
    assert str(e.value) == message


def test_cache_hits_share_the_index_and_evict_lru(compiler):
    specs = [compiler.parse({"type": "regex", "value": f"[a-z]{{{n}}}"}) for n in (1, 2, 3)]
    first = compiler.compile(specs[0])
    assert compiler.compile(compiler.parse({"type": "regex", "value": "[a-z]{1}"})) is first
    assert compiler.num_builds == 1
    compiler.compile(specs[1])
    compiler.compile(specs[0])  # touch: specs[1] is now the least recently used
    compiler.compile(specs[2])  # cache_size 2: evicts specs[1]
    assert compiler.cached(specs[0]) is first and compiler.cached(specs[1]) is None
    assert compiler.num_builds == 3
    compiler.compile(specs[1])
    assert compiler.num_builds == 4


def test_same_schema_text_in_any_key_order_hits_the_cache(compiler):
    a = compiler.compile(compiler.parse({"type": "json", "value": {"type": "object", "properties": {"x": {}, "y": {}}}}))
    b = compiler.compile(compiler.parse({"type": "json", "value": '{"properties": {"y": {}, "x": {}}, "type": "object"}'}))
    assert a is b


def test_concurrent_requests_share_one_build(compiler):
    spec = compiler.parse({"type": "json", "value": _slow_schema(30)})

    async def main():
        return await asyncio.gather(*(compiler.compile_async(spec) for _ in range(4)))

    results = asyncio.run(main())
    assert all(r is results[0] for r in results) and compiler.num_builds == 1


def test_slow_compile_times_out_quickly_without_blocking_the_loop(tokenizer):
    compiler = GrammarCompiler(tokenizer, len(tokenizer), tokenizer.eos_token_id, compile_timeout_s=0.1)
    spec = compiler.parse({"type": "regex", "value": "(?:[a-z]{0,60}[0-9]{0,60}){60}x"})  # minutes to build

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        with pytest.raises(GrammarError) as e:
            await compiler.compile_async(spec)
        elapsed = time.perf_counter() - start
        task.cancel()
        return e.value, elapsed, ticks

    error, elapsed, ticks = asyncio.run(main())
    assert str(error).startswith("grammar is not valid: compiling it took longer than 0.1 s")
    assert ticks >= 2  # the event loop kept running while the index was being built
    compiler.close()


def test_eos_ids_and_wide_logits(tokenizer):
    # Logits wider than the tokenizer (padded embeddings) and a second EOS id, as Llama 3 has.
    vocab_size = len(tokenizer) + 64
    compiler = GrammarCompiler(tokenizer, vocab_size, (tokenizer.eos_token_id, 5))
    compiled = compiler.compile(compiler.parse({"type": "regex", "value": "ab"}))
    state = compiled.new_state()
    mask = GrammarMasks().mask(state)
    assert mask.shape == (vocab_size,) and not mask[len(tokenizer):].any() and not mask[[2, 5]].any()
    for token in _spell(compiler, "ab"):
        state.advance(token)
    mask = GrammarMasks().mask(state)
    assert state.can_end() and state.is_finished()
    assert mask.nonzero().flatten().tolist() == [2, 5]
    compiler.close()


def _spell(compiler: GrammarCompiler, text: str) -> list[int]:
    by_bytes = {}
    for token_id, data in sorted(compiler.tokens.items()):
        by_bytes.setdefault(data, token_id)
    return [by_bytes[c.encode()] for c in text]
