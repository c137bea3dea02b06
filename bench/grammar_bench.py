"""Grammar-constrained decoding cost and grammar compile times: outlines-core (ours) beside llguidance and xgrammar.

    python -m bench.grammar_bench [--model models/rho-math-tiny] [--vocab-sizes 1000 32000] [--rows 32]
    python -m bench.grammar_bench --compile-only   # only the served compile path (rho-bench grammar --compile-only)

Prints one table. Step rows: one decode step of `--rows` sequences with a real model forward (KV cache of
~64 tokens) alone, then plus the grammar work (batched mask + one advance per row), each engine on the same JSON
schema; the ratio is (forward + grammar) / forward. Compile rows: time to turn each test schema into a ready
matcher (first mask included) with SentencePiece tokenizers trained here at each vocabulary size.
Served-path rows: `GrammarCompiler` as the server runs it (engine choice, worker process, Index pickled back),
median and maximum over the test schemas plus `{}` / `anyOf` / nested arrays of objects / 60 optional properties,
and the size and unpickling time of each outlines-core Index brought back from the worker.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from grammars.compiler import GrammarCompiler
from grammars.mask import GrammarMasks
from tests.grammars.cases import ANY_VALUE_SCHEMAS, SCHEMAS

STEP_SCHEMA = "pydantic_order"


@dataclass
class BenchConfig:
    model: str = "models/rho-math-tiny"
    vocab_sizes: tuple[int, ...] = (1000, 32000)
    rows: int = 32
    steps: int = 64
    threads: int = 2


def _corpus(num_lines: int = 60000, seed: int = 0) -> list[str]:
    """Random words, numbers and JSON-ish lines: enough distinct strings for a 32k BPE vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 12))) for _ in range(40000)]
    lines = []
    for _ in range(num_lines):
        picked = rng.choices(words, k=10)
        lines.append(" ".join(picked) + f' {{"{picked[0]}": {rng.randint(0, 99999)}, "ok": true}} {rng.random():.4f}')
    return lines


def train_tokenizer(out_dir: Path, vocab_size: int):
    """Llama-style SentencePiece BPE with byte fallback (same options as the test tokenizer), as a HF tokenizer."""
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, remove_extra_whitespaces=False, minloglevel=2, num_threads=2)
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = LlamaTokenizerFast.from_pretrained(str(out_dir), add_bos_token=True)
    assert len(tokenizer) == vocab_size, len(tokenizer)
    return tokenizer


# ----- engines: each turns a schema into a matcher with `mask_rows(logits)` and `advance(row, token)` -----
class Outlines:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab_size):
        self.compiler = GrammarCompiler(tokenizer, vocab_size, tokenizer.eos_token_id, compile_timeout_s=600,
                                        use_llguidance=False)  # outlines-core alone, for the comparison
        self.masks = GrammarMasks()  # the engine's mask cache

    def compile(self, schema: dict):
        grammar = self.compiler.compile(self.compiler.parse({"type": "json", "value": schema}))
        self.masks.mask(grammar.new_state())
        return grammar

    def states(self, grammar, rows: int):
        return [grammar.new_state() for _ in range(rows)]

    def mask(self, logits, states):
        self.masks.apply(logits, states)

    def advance(self, state, token):
        state.advance(token)


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab_size):
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self.vocab_size = vocab_size

    def compile(self, schema: dict):
        import llguidance
        import llguidance.torch as lt

        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        matcher = llguidance.LLMatcher(self.tokenizer, grammar)
        lt.fill_next_token_bitmask(matcher, lt.allocate_token_bitmask(1, self.vocab_size), 0)
        return grammar

    def states(self, grammar, rows: int):
        import llguidance
        import llguidance.torch as lt

        self.bitmask = lt.allocate_token_bitmask(rows, self.vocab_size)
        return [llguidance.LLMatcher(self.tokenizer, grammar) for _ in range(rows)]

    def mask(self, logits, states):
        import llguidance.torch as lt

        for i, m in enumerate(states):
            lt.fill_next_token_bitmask(m, self.bitmask, i)
        lt.apply_token_bitmask_inplace(logits, self.bitmask)

    def advance(self, state, token):
        state.consume_token(token)


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size):
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.vocab_size = vocab_size

    def compile(self, schema: dict):
        import xgrammar

        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        matcher = xgrammar.GrammarMatcher(compiled)
        matcher.fill_next_token_bitmask(xgrammar.allocate_token_bitmask(1, self.vocab_size), 0)
        return compiled

    def states(self, grammar, rows: int):
        import xgrammar

        self.bitmask = xgrammar.allocate_token_bitmask(rows, self.vocab_size)
        return [xgrammar.GrammarMatcher(grammar) for _ in range(rows)]

    def mask(self, logits, states):
        import xgrammar

        for i, m in enumerate(states):
            m.fill_next_token_bitmask(self.bitmask, i)
        xgrammar.apply_token_bitmask_inplace(logits, self.bitmask)

    def advance(self, state, token):
        assert state.accept_token(token)


ENGINES = (Outlines, LLGuidance, XGrammar)


def _engines(tokenizer, vocab_size) -> list:
    engines = []
    for cls in ENGINES:
        try:
            engines.append(cls(tokenizer, vocab_size))
        except ImportError as e:
            print(f"# {cls.name}: not measured ({e})")
    return engines


# ----- measurements -----
def _median_ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def compile_times(tokenizer, vocab_size: int) -> dict[str, dict[str, float]]:
    """engine -> schema name -> ms (a fresh compiler per schema for outlines-core: no cache hit)."""
    out: dict[str, dict[str, float]] = {}
    for engine in _engines(tokenizer, vocab_size):
        out[engine.name] = {}
        for name, schema in SCHEMAS.items():
            fresh = type(engine)(tokenizer, vocab_size) if isinstance(engine, Outlines) else engine
            start = time.perf_counter()
            fresh.compile(schema)
            out[engine.name][name] = (time.perf_counter() - start) * 1e3
    return out


@torch.inference_mode()
def step_times(model, tokenizer, config: BenchConfig) -> dict[str, tuple[float, float]]:
    """engine -> (grammar ms per step, forward ms per step) for `rows` sequences under one schema."""
    vocab = model.config.vocab_size
    prompt = tokenizer("Answer in JSON:")["input_ids"]
    out = model(input_ids=torch.tensor([prompt * 8] * config.rows), use_cache=True)  # ~64-token cache
    cache, last = out.past_key_values, torch.zeros(config.rows, 1, dtype=torch.long)
    # Each timed forward appends one token to the cache (64 -> 73 tokens): close enough to a fixed length.
    forward_ms = _median_ms(lambda: model(input_ids=last, cache=cache, use_cache=True), repeat=9)
    logits = out.logits[:, -1].float()
    results = {}
    for engine in _engines(tokenizer, vocab):
        grammar = engine.compile(SCHEMAS[STEP_SCHEMA])
        _grammar_step_ms(engine, grammar, logits, config)  # warm-up: first masks of each state are built lazily
        results[engine.name] = (_grammar_step_ms(engine, grammar, logits, config), forward_ms)
    return results


def _grammar_step_ms(engine, grammar, logits: torch.Tensor, config: BenchConfig) -> float:
    """Mean ms per step over `steps` steps: mask all rows, pick a token per row (argmax), advance every row."""
    generator = torch.Generator().manual_seed(0)
    states = engine.states(grammar, config.rows)
    noise = torch.randn(config.steps, *logits.shape, generator=generator)  # stands in for changing logits
    total = 0.0
    for step in range(config.steps):
        work = logits + noise[step]
        start = time.perf_counter()
        engine.mask(work, states)
        for row, token in enumerate(work.argmax(dim=-1).tolist()):
            engine.advance(states[row], token)
        total += time.perf_counter() - start
        if _any_finished(engine, states):
            states = engine.states(grammar, config.rows)  # restart finished documents, as new requests would
    return total / config.steps * 1e3


def _any_finished(engine, states) -> bool:
    if isinstance(engine, Outlines):
        return any(s.can_end() for s in states)
    if isinstance(engine, LLGuidance):
        return any(s.is_accepting() or s.is_stopped() for s in states)
    return any(s.is_terminated() or s.is_completed() if hasattr(s, "is_completed") else s.is_terminated()
               for s in states)


def served_schemas() -> dict[str, dict]:
    """The test schemas plus the shapes issue #17 names."""
    kinds = ["integer", "number", "string", "boolean"]
    extra = {
        "any_of_objects": {"anyOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                     {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}]},
        "nested_arrays_of_objects": {"type": "object", "properties": {"groups": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"}, "members": {"type": "array", "items": {
                "type": "object", "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {
                    "type": "string"}}}, "required": ["id"]}}}, "required": ["name", "members"]}}},
            "required": ["groups"]},
        "optional_60": {"type": "object", "properties": {f"field_{i}": {"type": kinds[i % 4]} for i in range(60)}},
    }
    return {**SCHEMAS, **{f"{k}*": v for k, v in ANY_VALUE_SCHEMAS.items() if k != "any_json"}, **extra}


def served_compile_times(tokenizer, vocab_size: int) -> list[tuple[str, str, float, int | None, float | None]]:
    """(schema, engine, ms, pickled Index bytes, unpickle ms) per schema, each on a fresh GrammarCompiler."""
    import pickle

    rows = []
    for name, schema in served_schemas().items():
        compiler = GrammarCompiler(tokenizer, vocab_size, tokenizer.eos_token_id, compile_timeout_s=600)
        try:
            compiler.compile(compiler.parse({"type": "regex", "value": "a"}))  # a warm worker, as in a server
            compiler.warm_up()
            spec = compiler.parse({"type": "json", "value": schema})
            start = time.perf_counter()
            grammar = compiler.compile(spec)
            GrammarMasks().mask(grammar.new_state())
            ms = (time.perf_counter() - start) * 1e3
            size = unpickle_ms = None
            if compiler.engine_for(spec) == "outlines":
                data = pickle.dumps(grammar.index)
                start = time.perf_counter()
                pickle.loads(data)
                size, unpickle_ms = len(data), (time.perf_counter() - start) * 1e3
            rows.append((name, compiler.engine_for(spec), ms, size, unpickle_ms))
        finally:
            compiler.close()
    return rows


def print_served(tables: dict[int, list]) -> None:
    print("\n| schema (* = unconstrained values) | engine | " + " | ".join(
        f"compile ms, vocab {v} | Index KB / unpickle ms, vocab {v}" for v in tables) + " |")
    print("|---|---|" + "---|---|" * len(tables))
    for i, (name, engine, *_rest) in enumerate(next(iter(tables.values()))):
        cells = []
        for rows in tables.values():
            _, _, ms, size, unpickle = rows[i]
            cells += [f"{ms:.1f}", "-" if size is None else f"{size / 1024:.0f} / {unpickle:.1f}"]
        print(f"| {name} | {engine} | " + " | ".join(cells) + " |")
    for v, rows in tables.items():
        times = [r[2] for r in rows]
        worst = max(rows, key=lambda r: r[2])
        print(f"vocab {v}: median {statistics.median(times):.1f} ms, max {worst[2]:.1f} ms ({worst[0]}) "
              f"over {len(rows)} schemas")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=BenchConfig.model)
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=list(BenchConfig.vocab_sizes))
    parser.add_argument("--rows", type=int, default=BenchConfig.rows)
    parser.add_argument("--threads", type=int, default=BenchConfig.threads)
    parser.add_argument("--compile-only", action="store_true", help="only the served compile path table")
    args = parser.parse_args(argv)
    config = BenchConfig(args.model, tuple(args.vocab_sizes), args.rows, threads=args.threads)
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = {v: train_tokenizer(Path(tmp) / str(v), v) for v in config.vocab_sizes}
        print_served({v: served_compile_times(tok, v) for v, tok in tokenizers.items()})
        if args.compile_only:
            return
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(config.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    steps = step_times(model, tokenizer, config)
    compiles = {v: compile_times(tok, v) for v, tok in tokenizers.items()}
    _print_table(config, steps, compiles)


def _print_table(config: BenchConfig, steps: dict, compiles: dict) -> None:
    engines = list(steps)
    print(f"\n| measurement | {' | '.join(engines)} |")
    print("|---|" + "---|" * len(engines))
    forward = next(iter(steps.values()))[1]
    print(f"| decode step, {config.rows} rows, model forward only (ms) | "
          + " | ".join(f"{forward:.2f}" for _ in engines) + " |")
    print(f"| grammar mask + advance per step, {config.rows} rows ({STEP_SCHEMA}) (ms) | "
          + " | ".join(f"{steps[e][0]:.3f}" for e in engines) + " |")
    print("| step-time ratio constrained / unconstrained | "
          + " | ".join(f"{(steps[e][0] + steps[e][1]) / steps[e][1]:.3f}x" for e in engines) + " |")
    for vocab_size, table in compiles.items():
        for name in SCHEMAS:
            print(f"| compile {name}, vocab {vocab_size} (ms) | "
                  + " | ".join(f"{table[e][name]:.1f}" if e in table else "-" for e in engines) + " |")
        print(f"| compile, median of {len(SCHEMAS)} schemas, vocab {vocab_size} (ms) | "
              + " | ".join(f"{statistics.median(table[e].values()):.1f}" if e in table else "-" for e in engines)
              + " |")


if __name__ == "__main__":
    main()
