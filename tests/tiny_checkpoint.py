"""Tiny real checkpoints for tests: a locally trained SentencePiece tokenizer and random-weight Llama/Mistral models.

Everything is written in the Hugging Face layout the server loads (config.json, model.safetensors, tokenizer files,
generation_config.json), by transformers itself, so the loader is tested against the real format.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

TOKENIZER_TEXT_LINES = 4000


def _training_text(seed: int = 0) -> str:
    rng = random.Random(seed)
    names = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Mark"]
    items = ["apples", "clips", "dollars", "pages", "marbles", "cookies", "books", "miles", "eggs", "tickets"]
    syllables = ["ka", "lo", "mi", "ne", "tor", "ve", "sa", "qu", "ix", "zen", "pla", "dro", "hum", "bre", "ost"]
    lines = []
    for _ in range(TOKENIZER_TEXT_LINES):
        words = " ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(8))
        lines.append(words + "\n")
        a, b = rng.randint(1, 999), rng.randint(1, 99)
        n, it = rng.choice(names), rng.choice(items)
        lines.append(
            f"Question: {n} has {a} {it} and buys {b} more. How many {it} does {n} have?\n"
            f"Answer: {n} has {a} + {b} = {a + b} {it}. The answer is {a + b}.\n"
            f"Problem: Compute {a} * {b} - {b} / 2 = {a * b - b / 2}. Let x = {a}; then 2x = {2 * a}. 50% of {a} is {a / 2}.\n"
            "{\"name\": \"value\", \"list\": [1, 2, 3], \"ok\": true, \"none\": null} <tag> café naïve – ∑ π ≤ √2\n"
        )
    return "".join(lines)


def train_tokenizer(out_dir: Path, vocab_size: int = 1024, seed: int = 0) -> None:
    """Train a Llama-style SentencePiece BPE (byte fallback) and save it as a HF fast tokenizer in out_dir."""
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text(seed).splitlines()), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False,
        minloglevel=2, num_threads=1,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tok = LlamaTokenizerFast.from_pretrained(str(out_dir), add_bos_token=True, add_eos_token=False)
    assert len(tok) == vocab_size, f"tokenizer conversion failed: {len(tok)} tokens (is protobuf installed?)"
    tok.save_pretrained(str(out_dir))


def build_checkpoint(out_dir: Path, tokenizer_dir: Path | None = None, arch: str = "llama", hidden_size: int = 64,
                     num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 128,
                     vocab_size: int = 1024, tie_word_embeddings: bool = False, rope_scaling: dict | None = None,
                     sliding_window: int | None = None, max_position_embeddings: int = 2048,
                     initializer_range: float = 0.08, seed: int = 0, shard_size: str | None = None,
                     dtype: str = "float32") -> Path:
    """Write a random-weight Llama or Mistral checkpoint (plus tokenizer) to out_dir and return it.

    `initializer_range` is larger than HF's 0.02 so logits have spread: fewer near-ties in greedy parity tests.
    """
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tokenizer_dir = out_dir
        train_tokenizer(out_dir, vocab_size=vocab_size)
    else:
        for f in tokenizer_dir.iterdir():
            if f.is_file() and ("token" in f.name or f.name == "special_tokens_map.json"):
                shutil.copy(f, out_dir / f.name)
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                  max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
                  tie_word_embeddings=tie_word_embeddings, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(rope_scaling=rope_scaling, **common)
        model = LlamaForCausalLM(config)
    elif arch == "mistral":
        config = MistralConfig(sliding_window=sliding_window, **common)
        model = MistralForCausalLM(config)
    else:
        raise ValueError(arch)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(str(out_dir), safe_serialization=True, **kwargs)
    return out_dir
