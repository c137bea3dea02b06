"""Tokenized, packed corpora on disk and the batches read from them.

A corpus folder holds `tokens.npy` (uint16, the token stream: BOS doc EOS BOS doc EOS ...), `labels.npy` (uint8,
the noise label of each token, 0 = clean), `meta.json` and `tokenizer/`. The stream is cut into rows of `seq_len`
tokens; row i is tokens[i*seq_len:(i+1)*seq_len]. Scores (score.py) and training use the same rows, so a reference
loss is always the reference model's loss on the same token in the same context.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from slm_train.config import DataConfig, SLMError
from slm_train.corpora import Segments, builtin_documents, file_documents
from slm_train.noise import LABELS
from slm_train.tokenizer import load_tokenizer, train_tokenizer

TOKENIZER_SAMPLE_DOCS = 3000


def documents(cfg: DataConfig):
    if cfg.corpus == "files":
        return file_documents(cfg.files)
    return builtin_documents(cfg.corpus, cfg.seed, cfg.max_number, cfg.noise_level)


def tokenize(tok, docs: list[Segments]) -> tuple[list[int], list[int]]:
    """Token stream and per-token labels of documents (a token takes the largest label among its characters)."""
    texts = ["".join(t for t, _ in d) for d in docs]
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    ids_out, labels_out = [], []
    for doc, ids, offsets in zip(docs, enc["input_ids"], enc["offset_mapping"]):
        chars = np.concatenate([np.full(len(t), label, np.uint8) for t, label in doc] + [np.zeros(1, np.uint8)])
        starts = np.minimum(np.array([s for s, _ in offsets] or [0], dtype=np.int64), len(chars) - 1)
        # max over each token's characters up to the next token's start (reduceat needs non-decreasing starts)
        token_labels = np.maximum.reduceat(chars, np.maximum.accumulate(starts))[:len(ids)]
        ids_out += [tok.bos_token_id] + ids + [tok.eos_token_id]
        labels_out += [0] + token_labels.tolist() + [0]
    return ids_out, labels_out


def build(cfg: DataConfig) -> Path:
    """Generate/read documents, tokenize, pack; returns the corpus folder."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = documents(cfg)
    tok = _tokenizer(cfg, docs, out / "tokenizer")
    ids, labels = [], []
    while len(ids) < cfg.num_tokens:
        chunk = list(itertools.islice(docs, 500))
        if not chunk:
            break
        i, lab = tokenize(tok, chunk)
        ids += i
        labels += lab
    num_seqs = len(ids) // cfg.seq_len
    if num_seqs == 0:
        raise SLMError(f"the corpus has {len(ids)} tokens: fewer than one sequence of {cfg.seq_len}")
    n = num_seqs * cfg.seq_len
    np.save(out / "tokens.npy", np.asarray(ids[:n], dtype=np.uint16))
    np.save(out / "labels.npy", np.asarray(labels[:n], dtype=np.uint8))
    meta = {"num_tokens": n, "seq_len": cfg.seq_len, "num_seqs": num_seqs, "vocab_size": len(tok),
            "labels": list(LABELS), "config": dataclasses.asdict(cfg)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def _tokenizer(cfg: DataConfig, docs, tok_dir: Path):
    if cfg.tokenizer:
        src = Path(cfg.tokenizer)
        tok = load_tokenizer(src)
        if src.resolve() != tok_dir.resolve():
            shutil.copytree(src, tok_dir, dirs_exist_ok=True)
        return tok
    if cfg.corpus == "files":
        sample = list(itertools.islice(docs, TOKENIZER_SAMPLE_DOCS))
        docs = itertools.chain(sample, docs)
    else:  # the built-in tokenizer sees both clean and noisy text, from seeds the corpora do not use
        sample = list(itertools.islice(builtin_documents("clean", 10**6, cfg.max_number), TOKENIZER_SAMPLE_DOCS))
        sample += list(itertools.islice(builtin_documents("noisy", 10**6 + 1, cfg.max_number), TOKENIZER_SAMPLE_DOCS))
    lines = [line for d in sample for line in "".join(t for t, _ in d).splitlines() if line]
    return train_tokenizer(lines, tok_dir, cfg.vocab_size)


class PackedData:
    """Read-only view of a corpus folder: rows of tokens and labels, and the seeded order they are trained in."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "meta.json").exists():
            raise SLMError(f"{self.path}: not a corpus folder (run `slm-train data` first)")
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.seq_len: int = self.meta["seq_len"]
        self.num_seqs: int = self.meta["num_seqs"]
        self.tokens = np.load(self.path / "tokens.npy", mmap_mode="r").reshape(self.num_seqs, self.seq_len)
        self.labels = np.load(self.path / "labels.npy", mmap_mode="r").reshape(self.num_seqs, self.seq_len)

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    def rows(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels) of the given rows, each (len(index), seq_len) int64."""
        return (torch.from_numpy(self.tokens[index].astype(np.int64)),
                torch.from_numpy(self.labels[index].astype(np.int64)))

    def order(self, data_seed: int, num_rows: int) -> np.ndarray:
        """The first num_rows row indices of the training order: seeded permutations, one per epoch."""
        rng = np.random.default_rng(data_seed)
        epochs = -(-num_rows // self.num_seqs)
        return np.concatenate([rng.permutation(self.num_seqs) for _ in range(epochs)])[:num_rows]
