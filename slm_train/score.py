"""Step 2 of Rho-1: the reference model's loss on every token of a packed corpus, stored aligned with its rows.

Output folder: `shard_00000.npy`, ... (float32 memmaps of shape (shard_seqs, seq_len); row r of shard k is corpus
row k*shard_seqs + r; entry 0 of a row has no context and is 0) and `meta.json`. Shards are written under a
temporary name and renamed when complete, so an interrupted run resumes at the first missing shard.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from slm_train import checkpoint
from slm_train.config import ScoreConfig, SLMError
from slm_train.data import PackedData


def shard_path(out: Path, k: int) -> Path:
    return out / f"shard_{k:05d}.npy"


@torch.inference_mode()
def score(cfg: ScoreConfig) -> Path:
    torch.set_num_threads(cfg.num_threads)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = PackedData(cfg.data_dir)
    model, _ = checkpoint.load_model(cfg.ckpt, device)
    model.eval()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_shards = -(-data.num_seqs // cfg.shard_seqs)
    todo = [k for k in range(num_shards) if not shard_path(out, k).exists()]
    for k in tqdm(todo, desc="score shards", disable=not todo):
        _score_shard(model, data, k, cfg, out, device)
    meta = {"num_seqs": data.num_seqs, "seq_len": data.seq_len, "shard_seqs": cfg.shard_seqs,
            "data_dir": str(Path(cfg.data_dir).resolve()), "ckpt": str(cfg.ckpt), "config": dataclasses.asdict(cfg),
            **_by_label(data, out, cfg.shard_seqs)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def _score_shard(model, data: PackedData, k: int, cfg: ScoreConfig, out: Path, device: str) -> None:
    lo, hi = k * cfg.shard_seqs, min((k + 1) * cfg.shard_seqs, data.num_seqs)
    tmp = out / f"shard_{k:05d}.tmp.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(hi - lo, data.seq_len))
    for start in range(lo, hi, cfg.batch_size):
        rows = np.arange(start, min(start + cfg.batch_size, hi))
        tokens, _ = data.rows(rows)
        arr[start - lo:start - lo + len(rows)] = model(tokens.to(device)).float().cpu().numpy()  # (b, T)
    arr.flush()
    del arr
    os.replace(tmp, shard_path(out, k))


HIST_BINS = np.linspace(0.0, 12.0, 49)  # reference-loss histogram edges (nats)


def _by_label(data: PackedData, out: Path, shard_seqs: int) -> dict:
    """Mean reference loss and loss histogram of each label (targets only: no padding, no row-first token)."""
    scores = ReferenceScores(out, data, shard_seqs)
    losses = np.concatenate([np.load(shard_path(out, k)) for k in range(scores.num_shards)])[:, 1:].ravel()
    labels = np.asarray(data.labels)[:, 1:].ravel()
    means, hists = {}, {}
    for i, name in enumerate(data.meta["labels"]):
        x = losses[labels == i]
        if len(x):
            means[name] = float(x.mean())
            hists[name] = np.histogram(np.clip(x, 0, HIST_BINS[-1]), HIST_BINS)[0].tolist()
    return {"mean_loss_by_label": means, "loss_histogram_by_label": hists, "histogram_edges": HIST_BINS.tolist()}


class ReferenceScores:
    """Read side: reference losses of any corpus rows, checked to belong to this corpus and packing."""

    def __init__(self, path: str | Path, data: PackedData, shard_seqs: int | None = None):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if shard_seqs is None:
            if not meta_file.exists():
                raise SLMError(f"{self.path}: no reference scores (run `slm-train score` first)")
            meta = json.loads(meta_file.read_text())
            if (meta["num_seqs"], meta["seq_len"]) != (data.num_seqs, data.seq_len):
                raise SLMError(f"{self.path}: scores are for {meta['num_seqs']} rows of {meta['seq_len']} tokens, "
                               f"the corpus has {data.num_seqs} rows of {data.seq_len}: re-run `slm-train score`")
            shard_seqs = meta["shard_seqs"]
        self.shard_seqs = shard_seqs
        self.num_shards = -(-data.num_seqs // shard_seqs)
        self.shards = [np.load(shard_path(self.path, k), mmap_mode="r") for k in range(self.num_shards)]

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """(len(index), seq_len) float32 reference losses."""
        out = [self.shards[i // self.shard_seqs][i % self.shard_seqs] for i in index.tolist()]
        return torch.from_numpy(np.stack(out).astype(np.float32))
