"""GrammarCompiler: one per server. Request grammar -> `CompiledGrammar`, built off the event loop and off the
engine thread, with a timeout, and kept in a bounded LRU cache keyed by (kind, canonical spec).

A build (JSON schema -> regex on a daemon thread, then regex -> outlines-core `Index` in a worker process of
`worker_pool`, at most `num_workers` at once) is bounded three ways (issue #15): regexes whose counted repetitions
are absurd are refused before anything is built; each build's timeout counts from the moment it has a worker (a
build over it is killed with its process, and its request gets a 422); each worker's address space is capped
(`memory_limit_mb`). A build waits at most `compile_timeout_s` for a free worker. Timed-out, killed and waited-out
builds are not cached (a retry builds again); deterministic failures (invalid regex or schema) are cached like
successes. Concurrent requests for the same grammar share one build. The Index comes back pickled (outlines-core's
binary form; figures in `bench/grammar_bench.py`).

JSON schemas with unconstrained values (`{}`, pydantic's `Any`, bare objects / arrays) or more than
MAX_OUTLINES_OPTIONAL optional properties in one object go to llguidance when it is installed (`llguidance_grammar.py` says why); `use_llguidance=False` keeps everything on outlines-core.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections import OrderedDict

from grammars import llguidance_grammar
from grammars.build_worker import BuildFailed, BuildTimeout, WorkerDied
from grammars.compiled import CompiledGrammar
from grammars.json_values import generic_json_regex, has_unconstrained_value, most_optional_properties
from grammars.spec import GrammarError, GrammarSpec, parse_grammar, regex_of
from grammars.vocabulary import build_vocabulary, token_bytes
from grammars.worker_pool import PoolBusy, WorkerPool

# More optional properties than this in one object: llguidance (outlines' regex enumerates their orders).
MAX_OUTLINES_OPTIONAL = 12
DEFAULT_MEMORY_LIMIT_MB = 4096  # per worker process; a large legitimate build (any-JSON, vocab 32k) stays far under

__all__ = ["GrammarCompiler", "GrammarError", "GrammarSpec", "CompiledGrammar"]


class GrammarCompiler:
    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: int | tuple[int, ...] | list[int] | None = None,
                 cache_size: int = 64, compile_timeout_s: float = 10.0, num_workers: int = 2,
                 memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB, use_llguidance: bool = True):
        if eos_token_ids is None:
            eos_token_ids = tokenizer.eos_token_id
        self.eos_token_ids = (eos_token_ids,) if isinstance(eos_token_ids, int) else tuple(eos_token_ids)
        assert self.eos_token_ids, "a grammar needs an EOS token"
        self.vocab_size = vocab_size
        self.cache_size = cache_size
        self.compile_timeout_s = compile_timeout_s
        self.tokens = token_bytes(tokenizer, vocab_size)  # id -> bytes (also useful to tests and benchmarks)
        self.vocabulary = build_vocabulary(self.tokens, self.eos_token_ids[0])
        self.memory_limit_mb = memory_limit_mb
        # (kind, canonical) -> CompiledGrammar, or the GrammarError of a deterministic failure
        self._cache: OrderedDict[tuple[str, str], CompiledGrammar | GrammarError] = OrderedDict()
        self._building: dict[tuple[str, str], concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self.pool = WorkerPool(self.tokens, self.eos_token_ids[0], num_workers,
                               memory_limit_mb * 2 ** 20 if memory_limit_mb else None)
        self._llguidance = (llguidance_grammar.LLGuidanceTokenizers(tokenizer, vocab_size)
                            if use_llguidance and llguidance_grammar.available() else None)
        self.num_builds = 0  # grammars actually compiled (cache misses); read by tests and metrics

    # ----- public -----
    def parse(self, grammar) -> GrammarSpec:
        return parse_grammar(grammar)

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """Blocking compile (tests, scripts). Servers call compile_async. The build bounds the wait: at most
        compile_timeout_s for a worker, then compile_timeout_s of building."""
        return self._future(spec).result()

    async def compile_async(self, spec: GrammarSpec) -> CompiledGrammar:
        # shield: a waiter that goes away (client disconnect) must not cancel a build others may share.
        return await asyncio.shield(asyncio.wrap_future(self._future(spec)))

    def cached(self, spec: GrammarSpec) -> CompiledGrammar | None:
        with self._lock:
            hit = self._cache.get(spec.cache_key)
        return hit if isinstance(hit, CompiledGrammar) else None

    def close(self) -> None:
        """Kill the worker processes (a build in flight gets an error)."""
        self.pool.close()

    # ----- internals -----
    def _future(self, spec: GrammarSpec) -> concurrent.futures.Future:
        key = spec.cache_key
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                done: concurrent.futures.Future = concurrent.futures.Future()
                hit = self._cache[key]
                done.set_exception(hit) if isinstance(hit, GrammarError) else done.set_result(hit)
                return done
            future = self._building.get(key)
            if future is None:
                future = concurrent.futures.Future()
                self._building[key] = future
                threading.Thread(target=self._run_build, args=(spec, future), daemon=True,
                                 name="grammar-compile").start()
            return future

    def _run_build(self, spec: GrammarSpec, future: concurrent.futures.Future) -> None:
        try:
            compiled = self._build(spec)
        except _Transient as e:  # timed out, killed, or no worker free: not cached, a retry builds again
            self._finish(spec.cache_key, None)
            future.set_exception(e.error)
            return
        except GrammarError as e:  # deterministic: the same grammar fails the same way
            self._finish(spec.cache_key, e)
            future.set_exception(e)
            return
        except BaseException as e:  # a bug: delivered to every waiter, not cached
            self._finish(spec.cache_key, None)
            future.set_exception(e)
            return
        self._finish(spec.cache_key, compiled)  # cached before any waiter wakes
        future.set_result(compiled)

    def engine_for(self, spec: GrammarSpec) -> str:
        """"llguidance" (when installed) for JSON schemas with unconstrained values or many optional properties,
        else "outlines"."""
        if self._llguidance is None or spec.kind != "json":
            return "outlines"
        schema = json.loads(spec.value)
        if generic_json_regex(schema) is not None or has_unconstrained_value(schema):
            return "llguidance"
        return "llguidance" if most_optional_properties(schema) > MAX_OUTLINES_OPTIONAL else "outlines"

    def warm_up(self) -> None:
        """Make what the first grammar would otherwise wait for: llguidance's tokenizer (~0.7 s at vocab 32k).
        The worker processes already start in the background."""
        if self._llguidance is not None:
            self._llguidance.get()

    def _build(self, spec: GrammarSpec) -> CompiledGrammar:
        if self.engine_for(spec) == "llguidance":  # ~1 ms, no index: no worker needed
            compiled = llguidance_grammar.build(spec, self._llguidance, self.vocab_size, self.eos_token_ids)
            with self._lock:
                self.num_builds += 1
            return compiled
        regex = regex_of(spec)  # GrammarError for bad schemas and absurd repetition counts, before any build
        try:
            index = self.pool.build(regex, self.compile_timeout_s, wait_s=self.compile_timeout_s)
        except BuildFailed as e:  # invalid regex, or one the vocabulary cannot spell
            raise GrammarError(f"grammar is not valid: {_regex_problem(spec, e)}") from None
        except BuildTimeout:
            raise _Transient(self._timeout_error()) from None
        except WorkerDied:
            raise _Transient(GrammarError(
                f"grammar is not valid: compiling it needed more than the compiler's memory limit "
                f"({self.memory_limit_mb} MB); simplify the schema or regex")) from None
        except PoolBusy:
            raise _Transient(GrammarError(
                f"grammar is not valid: the grammar compiler stayed busy for {self.compile_timeout_s:g} s "
                "(--grammar-compile-timeout) with other grammars; try again")) from None
        with self._lock:
            self.num_builds += 1
        return CompiledGrammar(spec, regex, index, self.vocab_size, self.eos_token_ids)

    def _finish(self, key: tuple[str, str], result: CompiledGrammar | GrammarError | None) -> None:
        with self._lock:
            self._building.pop(key, None)
            if result is None:
                return
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _timeout_error(self) -> GrammarError:
        return GrammarError(f"grammar is not valid: compiling it took longer than {self.compile_timeout_s:g} s "
                            "(--grammar-compile-timeout); simplify the schema, e.g. fewer optional properties")


class _Transient(Exception):
    """A failure that says nothing about the grammar itself (timeout, memory, busy): never cached."""

    def __init__(self, error: GrammarError):
        super().__init__(str(error))
        self.error = error


def _regex_problem(spec: GrammarSpec, error: Exception) -> str:
    """outlines-core only says "Failed to build DFA": name the syntax error when the `regex` package finds one."""
    import regex

    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if spec.kind == "regex":
        try:
            regex.compile(spec.value)
        except regex.error as syntax:
            return f"invalid regex: {syntax}"
    return text

