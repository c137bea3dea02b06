"""The Rho-1 stages of one seed, each an idempotent job (skipped when its result.json exists, resumed from its
checkpoint when interrupted), shared by the experiment and the bundled-model recipe.

Paper-faithful layout (PAPER.md §3): "base" = causal LM on a separate, unscored noisy corpus (the pretrained base
model); "reference" = that base fine-tuned on the small curated clean set; "score" = the reference's loss on every
token of the arms' noisy corpus; every arm continues from the same per-seed base on that corpus. Seed s sets the
base's initialisation and the data order of every stage, so seeds differ in everything but the corpora.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from slm_train.config import DataConfig, ExportConfig, ModelConfig, ScoreConfig, TrainConfig
from slm_train.data import PackedData, build
from slm_train.evaluate import accuracy
from slm_train.export import export
from slm_train.heldout import read as read_heldout
from slm_train.heldout import write as write_heldout
from slm_train.score import score
from slm_train.train import train


@dataclass
class Corpora:
    clean: Path  # the curated clean set: all the reference sees (and the tokenizer)
    base: Path  # noisy corpus of the base model (never scored)
    noisy: Path  # the arms' noisy corpus (scored by each seed's reference)
    heldout: Path  # held-out problems (problems.jsonl)


def build_corpora(root: Path, seq_len: int, clean: int, base: int, noisy: int, heldout: int, vocab: int,
                  wrong_share: float = 0.3) -> Corpora:
    c = Corpora(root / "clean", root / "base_corpus", root / "noisy", root / "heldout")
    if not (c.clean / "meta.json").exists():
        build(DataConfig(out_dir=str(c.clean), corpus="clean", num_tokens=clean, seq_len=seq_len, seed=1,
                         vocab_size=vocab))
    tok = str(c.clean / "tokenizer")
    for folder, n, seed in ((c.base, base, 2), (c.noisy, noisy, 3)):
        if not (folder / "meta.json").exists():
            build(DataConfig(out_dir=str(folder), corpus="noisy", num_tokens=n, seq_len=seq_len, seed=seed,
                             wrong_share=wrong_share, tokenizer=tok))
    if not (c.heldout / "problems.jsonl").exists():
        write_heldout(c.heldout, heldout, Path(tok))
    return c


def model_of(hidden: int, layers: int, heads: int) -> ModelConfig:
    """Llama proportions: MLP width about 8/3 of the hidden size, rounded down to a multiple of 16."""
    return ModelConfig(hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 16 * 16,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads)


def seed_dir(root: Path, seed: int) -> Path:
    return root / f"seed{seed}"


def done(run_dir: Path) -> dict | None:
    f = run_dir / "result.json"
    return json.loads(f.read_text()) if f.exists() else None


def train_stage(out: Path, cfg: TrainConfig, c: Corpora, greedy: bool = True, num_threads: int = 1) -> dict:
    """Train (resuming), then held-out greedy accuracy through rho-serve's engine; result.json marks it done."""
    if (r := done(out)) is not None:
        return r
    steps = max(1, cfg.max_tokens // (cfg.batch_size * PackedData(cfg.data_dir).seq_len))
    ckpt = train(dataclasses.replace(cfg, out_dir=str(out), resume=True, ckpt_every=max(1, steps // 6)))
    result = {"log": [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]}
    if greedy:
        result["greedy"] = greedy_accuracy(ckpt, c, out / "export", num_threads)
    (out / "result.json").write_text(json.dumps(result))
    return result


def greedy_accuracy(ckpt: Path, c: Corpora, export_dir: Path, num_threads: int) -> dict:
    export(ExportConfig(ckpt=str(ckpt), data_dir=str(c.clean), out_dir=str(export_dir)), card_text="eval\n")
    try:
        return accuracy(export_dir, read_heldout(c.heldout), num_threads=num_threads)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)


def score_stage(out: Path, ref_ckpt: Path, c: Corpora, num_threads: int, device: str = "") -> dict:
    if not (out / "meta.json").exists():
        score(ScoreConfig(data_dir=str(c.noisy), ckpt=str(ref_ckpt), out_dir=str(out), num_threads=num_threads,
                          batch_size=16, shard_seqs=max(64, PackedData(c.noisy).num_seqs // 8), device=device))
    return json.loads((out / "meta.json").read_text())
