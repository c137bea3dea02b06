"""The three Rho-1 steps chained, shared by the experiment and the bundled-model recipe.

Paper-faithful layout (PAPER.md §3): a short causal-LM "base" run on the noisy corpus stands in for the pretrained
base model; the reference model is that base fine-tuned on clean data; every arm continues from the same base on
the noisy corpus. So the reference is clearly stronger than the target on clean text, as in the paper.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from slm_train.config import DataConfig, ModelConfig, ScoreConfig, TrainConfig
from slm_train.data import PackedData, build
from slm_train.reference import train_reference
from slm_train.score import score
from slm_train.train import train


@dataclass
class Corpora:
    clean: Path  # reference-model data (and the tokenizer)
    noisy: Path  # the "web" corpus every arm trains on
    heldout: Path  # clean text from another seed, for the held-out loss


def build_corpora(root: Path, seq_len: int, clean_tokens: int, noisy_tokens: int, max_number: int,
                  vocab_size: int = 1024, noise_level: float = 1.0) -> Corpora:
    c = Corpora(root / "clean", root / "noisy", root / "heldout")
    if not (c.clean / "meta.json").exists():
        build(DataConfig(out_dir=str(c.clean), corpus="clean", num_tokens=clean_tokens, seq_len=seq_len, seed=0,
                         max_number=max_number, vocab_size=vocab_size))
    tok = str(c.clean / "tokenizer")
    if not (c.noisy / "meta.json").exists():
        build(DataConfig(out_dir=str(c.noisy), corpus="noisy", num_tokens=noisy_tokens, seq_len=seq_len, seed=1,
                         max_number=max_number, noise_level=noise_level, tokenizer=tok))
    if not (c.heldout / "meta.json").exists():
        build(DataConfig(out_dir=str(c.heldout), corpus="clean", num_tokens=64 * seq_len + seq_len, seq_len=seq_len,
                         seed=2, max_number=max_number, tokenizer=tok))
    return c


def base_and_reference(root: Path, c: Corpora, base: TrainConfig, ref: TrainConfig) -> tuple[Path, Path]:
    """Train the shared base (on noisy text) and the reference (base fine-tuned on clean text); skip if done."""
    base_ckpt, ref_ckpt = root / "base" / "ckpt.pt", root / "reference" / "ckpt.pt"
    if not base_ckpt.exists():
        train(dataclasses.replace(base, data_dir=str(c.noisy), out_dir=str(base_ckpt.parent), mode="clm",
                                  eval_data=str(c.heldout)))
    if not ref_ckpt.exists():
        train_reference(dataclasses.replace(ref, data_dir=str(c.clean), out_dir=str(ref_ckpt.parent), mode="clm",
                                            init_from=str(base_ckpt), eval_data=str(c.heldout)))
    return base_ckpt, ref_ckpt


def score_corpus(root: Path, c: Corpora, ref_ckpt: Path, num_threads: int) -> Path:
    out = root / "scores"
    if not (out / "meta.json").exists():
        score(ScoreConfig(data_dir=str(c.noisy), ckpt=str(ref_ckpt), out_dir=str(out), num_threads=num_threads,
                          batch_size=16, shard_seqs=max(64, PackedData(c.noisy).num_seqs // 8)))
    return out


def model_of(hidden: int, layers: int, heads: int) -> ModelConfig:
    """Llama proportions: MLP width about 8/3 of the hidden size, rounded down to a multiple of 16."""
    return ModelConfig(hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 16 * 16,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads)
