"""GrammarCompiler: one per server. Request grammar -> `CompiledGrammar`, built off the event loop and off the
engine thread, with a timeout, and kept in a bounded LRU cache keyed by (kind, canonical spec).

Compilation (JSON schema -> regex -> outlines-core `Index`) runs on daemon worker threads, at most `num_workers`
at once: outlines-core releases the GIL while it builds the index, so the event loop and the engine thread keep
running. A Rust compile cannot be interrupted: after a timeout the request gets its error at once, the build
finishes in the background (daemon threads never delay shutdown), and its result still lands in the cache (a retry
then succeeds at once). Concurrent requests for the same grammar share one build.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import OrderedDict

from outlines_core import Index

from grammars.compiled import CompiledGrammar
from grammars.spec import GrammarError, GrammarSpec, parse_grammar, regex_of
from grammars.vocabulary import build_vocabulary, token_bytes

__all__ = ["GrammarCompiler", "GrammarError", "GrammarSpec", "CompiledGrammar"]


class GrammarCompiler:
    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: int | tuple[int, ...] | list[int] | None = None,
                 cache_size: int = 64, compile_timeout_s: float = 10.0, num_workers: int = 2):
        if eos_token_ids is None:
            eos_token_ids = tokenizer.eos_token_id
        self.eos_token_ids = (eos_token_ids,) if isinstance(eos_token_ids, int) else tuple(eos_token_ids)
        assert self.eos_token_ids, "a grammar needs an EOS token"
        self.vocab_size = vocab_size
        self.cache_size = cache_size
        self.compile_timeout_s = compile_timeout_s
        self.tokens = token_bytes(tokenizer, vocab_size)  # id -> bytes (also useful to tests and benchmarks)
        self.vocabulary = build_vocabulary(self.tokens, self.eos_token_ids[0])
        self._cache: OrderedDict[tuple[str, str], CompiledGrammar] = OrderedDict()
        self._building: dict[tuple[str, str], concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(num_workers)  # builds running at once
        self.num_builds = 0  # grammars actually compiled (cache misses); read by tests and metrics

    # ----- public -----
    def parse(self, grammar) -> GrammarSpec:
        return parse_grammar(grammar)

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """Blocking compile with the timeout (tests, scripts). Servers call compile_async."""
        future = self._future(spec)
        try:
            return future.result(timeout=self.compile_timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._timeout_error() from None

    async def compile_async(self, spec: GrammarSpec) -> CompiledGrammar:
        # shield: a timed-out waiter must not cancel a build that other requests (or the cache) still want.
        waiter = asyncio.shield(asyncio.wrap_future(self._future(spec)))
        try:
            return await asyncio.wait_for(waiter, timeout=self.compile_timeout_s)
        except asyncio.TimeoutError:
            raise self._timeout_error() from None

    def cached(self, spec: GrammarSpec) -> CompiledGrammar | None:
        with self._lock:
            return self._cache.get(spec.cache_key)

    def close(self) -> None:
        """Nothing to release: builds run on daemon threads. Kept so owners can close what they open."""

    # ----- internals -----
    def _future(self, spec: GrammarSpec) -> concurrent.futures.Future:
        key = spec.cache_key
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                done: concurrent.futures.Future = concurrent.futures.Future()
                done.set_result(self._cache[key])
                return done
            future = self._building.get(key)
            if future is None:
                future = concurrent.futures.Future()
                self._building[key] = future
                threading.Thread(target=self._run_build, args=(spec, future), daemon=True,
                                 name="grammar-compile").start()
            return future

    def _run_build(self, spec: GrammarSpec, future: concurrent.futures.Future) -> None:
        with self._slots:
            try:
                compiled = self._build(spec)
            except BaseException as e:  # delivered to every waiter; GrammarError for user mistakes
                self._finish(spec.cache_key, None)
                future.set_exception(e)
                return
        self._finish(spec.cache_key, compiled)  # cached before any waiter wakes
        future.set_result(compiled)

    def _build(self, spec: GrammarSpec) -> CompiledGrammar:
        regex = regex_of(spec)
        try:
            index = Index(regex, self.vocabulary)
        except Exception as e:  # invalid regex, or one the vocabulary cannot spell
            raise GrammarError(f"grammar is not valid: {_regex_problem(spec, e)}") from None
        self.num_builds += 1
        return CompiledGrammar(spec, regex, index, self.vocab_size, self.eos_token_ids)

    def _finish(self, key: tuple[str, str], compiled: CompiledGrammar | None) -> None:
        with self._lock:
            self._building.pop(key, None)
            if compiled is None:
                return
            self._cache[key] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _timeout_error(self) -> GrammarError:
        return GrammarError(f"grammar is not valid: compiling it took longer than {self.compile_timeout_s:g} s "
                            "(--grammar-compile-timeout); simplify the schema, e.g. fewer optional properties")


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

