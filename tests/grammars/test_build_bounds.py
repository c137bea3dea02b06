"""Grammar builds are bounded (issue #15 item 1): killable (worker process), memory-capped, timed from the build's
own start, timed-out builds not cached, absurd repetition counts refused before building, and a bad grammar never
holds up another one. The slow grammars here are slow by construction (nested counted repetitions whose automaton
explodes: minutes at vocabulary 1k), so no test depends on the machine's speed."""
from __future__ import annotations

import asyncio
import os

import pytest
from transformers import AutoTokenizer

from grammars.compiler import GrammarCompiler, GrammarError
from grammars.regex_size import measure

# Never finishes within any timeout used here (15+ s measured with a 15 s deadline; its DFA keeps growing).
SLOW_REGEX = "(?:[a-z]{0,60}[0-9]{0,60}){60}x"
# Allocates fast: dies at a 120 MB cap within seconds.
HUNGRY_REGEX = "(?:.{0,60}){60}"
SMALL_REGEX = "[a-c]{2}x"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def _compiler(tokenizer, **kwargs) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, len(tokenizer), tokenizer.eos_token_id, **kwargs)


def _regex(compiler, value):
    return compiler.parse({"type": "regex", "value": value})


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_timed_out_build_is_killed_and_not_cached(tokenizer):
    compiler = _compiler(tokenizer, compile_timeout_s=1.0, num_workers=1)
    try:
        spec = _regex(compiler, SLOW_REGEX)
        compiler.compile(_regex(compiler, "a"))  # the worker is up
        (before,) = compiler.pool.worker_pids()
        with pytest.raises(GrammarError, match="took longer than 1 s"):
            compiler.compile(spec)
        assert not _exists(before), "the timed-out build's process still runs"
        assert spec.cache_key not in compiler._cache and compiler.cached(spec) is None
        # a retry is a new build (not a cached error), on a fresh worker
        with pytest.raises(GrammarError, match="took longer than 1 s"):
            compiler.compile(spec)
        assert compiler.compile(_regex(compiler, SMALL_REGEX)).index is not None
    finally:
        compiler.close()


def test_deterministic_failures_are_cached(tokenizer):
    compiler = _compiler(tokenizer)
    try:
        spec = _regex(compiler, "(ab")
        for _ in range(2):
            with pytest.raises(GrammarError, match="invalid regex"):
                compiler.compile(spec)
        assert isinstance(compiler._cache[spec.cache_key], GrammarError)
    finally:
        compiler.close()


def test_memory_cap_kills_a_hungry_build(tokenizer):
    compiler = _compiler(tokenizer, compile_timeout_s=120, num_workers=1, memory_limit_mb=120)
    try:
        with pytest.raises(GrammarError, match=r"memory limit \(120 MB\)"):
            compiler.compile(_regex(compiler, HUNGRY_REGEX))
        assert compiler.compile(_regex(compiler, SMALL_REGEX)).index is not None  # a fresh worker took over
    finally:
        compiler.close()


def test_timeout_counts_from_the_build_start_not_the_wait(tokenizer):
    # One worker: the small grammar waits for the slow one's 1.5 s, then builds in milliseconds. With the
    # timeout counted from the request (before), it failed after waiting.
    compiler = _compiler(tokenizer, compile_timeout_s=1.5, num_workers=1)
    try:
        compiler.compile(_regex(compiler, "a"))

        async def main():
            slow = asyncio.ensure_future(compiler.compile_async(_regex(compiler, SLOW_REGEX)))
            await asyncio.sleep(0.2)  # the slow build has the worker
            small = await compiler.compile_async(_regex(compiler, SMALL_REGEX))
            return small, await asyncio.gather(slow, return_exceptions=True)

        small, (slow_result,) = asyncio.run(main())
        assert small.index is not None
        assert isinstance(slow_result, GrammarError) and "took longer" in str(slow_result)
    finally:
        compiler.close()


def test_small_grammar_compiles_while_a_bad_one_builds(tokenizer):
    compiler = _compiler(tokenizer, compile_timeout_s=60, num_workers=2)
    try:
        compiler.compile(_regex(compiler, "a"))

        async def main():
            slow = asyncio.ensure_future(compiler.compile_async(_regex(compiler, SLOW_REGEX)))
            await asyncio.sleep(0.2)
            small = await compiler.compile_async(_regex(compiler, SMALL_REGEX))
            still_building = not slow.done()
            compiler.close()  # kills the slow build's worker
            await asyncio.gather(slow, return_exceptions=True)
            return small, still_building

        small, still_building = asyncio.run(main())
        assert small.index is not None and still_building
    finally:
        compiler.close()


@pytest.mark.parametrize("value", [".{10000}", "(a|b){1,50000}", ".{1000000}", "(a{100}){100}"])
def test_absurd_repetition_counts_are_refused_before_building(tokenizer, value):
    compiler = _compiler(tokenizer)
    try:
        with pytest.raises(GrammarError, match="too large to compile: its repetition counts"):
            compiler.parse({"type": "regex", "value": value})
        spec = compiler.parse({"type": "json", "value": {"type": "string", "maxLength": 100000}})
        with pytest.raises(GrammarError, match="too large to compile"):
            compiler.compile(spec)
        assert compiler.num_builds == 0
    finally:
        compiler.close()


@pytest.mark.parametrize("value, size, copies", [
    ("[a-c]{2}x", 3, 2), (r"(?:[a-z]{0,25}[0-9]{0,25}){25}x", 1251, 625), (r"\d{3}-\d{4}", 8, 4),
    ("(a{3}b){5}", 20, 15), ("a{3}|b{4000}", 4003, 4000), (r"[\]{]{2}\{3}", 5, 2), ("a{x}", 4, 1),
])
def test_measure(value, size, copies):
    assert measure(value) == (size, copies)
