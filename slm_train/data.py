"""Tokenized, packed corpora on disk and the batches read from them.

A corpus folder holds `tokens.npy` (uint16, shape (num_seqs, seq_len): whole documents BOS doc EOS packed
first-fit, then padding), `labels.npy` (uint8, the label of each token: 0 = clean, noise.PAD = padding),
`meta.json` and `tokenizer/`. Scores (score.py) and training use the same rows, so a reference loss is always the
reference model's loss on the same token in the same context. A built-in corpus is generated kind by kind until
each kind has its share of the tokens (noise.MIX), then its documents are shuffled (seeded) and packed.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from slm_train.config import DataConfig, SLMError
from slm_train.corpora import Segments, builtin_kinds, file_documents
from slm_train.noise import LABELS, PAD
from slm_train.packing import first_fit
from slm_train.tokenizer import load_tokenizer, train_tokenizer

TOKENIZER_SAMPLE_DOCS = 800  # per kind of the noisy mix (and as many clean problems)
TOKENIZER_SEED = 10**6  # no corpus uses it


def tokenize(tok, docs: list[Segments]) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of each document, BOS and EOS added (a token takes the largest label among its characters;
    BOS/EOS take the document's first label)."""
    texts = ["".join(t for t, _ in d) for d in docs]
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for doc, ids, offsets in zip(docs, enc["input_ids"], enc["offset_mapping"]):
        chars = np.concatenate([np.full(len(t), label, np.uint8) for t, label in doc] + [np.zeros(1, np.uint8)])
        starts = np.minimum(np.array([s for s, _ in offsets] or [0], dtype=np.int64), len(chars) - 1)
        # max over each token's characters up to the next token's start (reduceat needs non-decreasing starts)
        token_labels = np.maximum.reduceat(chars, np.maximum.accumulate(starts))[:len(ids)]
        edge = int(doc[0][1]) if doc else 0
        out.append(([tok.bos_token_id] + ids + [tok.eos_token_id], [edge] + token_labels.tolist() + [edge]))
    return out


def _take(tok, docs, budget: int) -> list[tuple[list[int], list[int]]]:
    """Tokenized documents from the stream until `budget` tokens."""
    out, n = [], 0
    while n < budget:
        chunk = list(itertools.islice(docs, 256))
        if not chunk:
            break
        for d in tokenize(tok, chunk):
            out.append(d)
            n += len(d[0])
            if n >= budget:
                break
    return out


def build(cfg: DataConfig) -> Path:
    """Generate/read documents, tokenize, pack; returns the corpus folder."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(cfg, out / "tokenizer")
    if cfg.corpus == "files":
        docs = _take(tok, file_documents(cfg.files), cfg.num_tokens)
    else:
        docs = [d for stream, share in builtin_kinds(cfg.corpus, cfg.seed, cfg.wrong_share).values()
                for d in _take(tok, stream, int(share * cfg.num_tokens))]
        random.Random(cfg.seed).shuffle(docs)
    if not docs:
        raise SLMError("the corpus has no documents")
    tokens, labels = first_fit(docs, cfg.seq_len, tok.eos_token_id)
    np.save(out / "tokens.npy", tokens.ravel())
    np.save(out / "labels.npy", labels.ravel())
    meta = {"num_tokens": int(tokens.size), "num_seqs": len(tokens), "seq_len": cfg.seq_len,
            "num_documents": len(docs), "padding": float((labels == PAD).mean()), "vocab_size": len(tok),
            "labels": list(LABELS), "config": dataclasses.asdict(cfg)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def _tokenizer(cfg: DataConfig, tok_dir: Path):
    if cfg.tokenizer:
        src = Path(cfg.tokenizer)
        tok = load_tokenizer(src)
        if src.resolve() != tok_dir.resolve():
            shutil.copytree(src, tok_dir, dirs_exist_ok=True)
        return tok
    if cfg.corpus == "files":
        sample = list(itertools.islice(file_documents(cfg.files), TOKENIZER_SAMPLE_DOCS))
    else:  # the built-in tokenizer sees every kind of text, from a seed the corpora do not use
        kinds = {**builtin_kinds("noisy", TOKENIZER_SEED, 0.3), **builtin_kinds("clean", TOKENIZER_SEED, 0.0)}
        sample = [d for stream, _ in kinds.values() for d in itertools.islice(stream, TOKENIZER_SAMPLE_DOCS)]
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


def valid_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: tokens that carry a loss: not padding, and not a row's first token (it has no context)."""
    valid = labels != PAD
    valid[:, 0] = False
    return valid
