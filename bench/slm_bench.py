"""SLM's cost (issue 4): training tokens/s of causal LM vs SLM vs random selection on the same model and batches,
and the scoring pass, side by side in one table. Run: `python -m bench.slm_bench [--hidden 128 --steps 20]`.

SLM adds a reference-loss read, a top-k over the batch and (under DDP) one all-gather per micro-step; the paper
says selection comes "without incurring additional costs", which the ratio column checks.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from slm_train import checkpoint, pipeline
from slm_train.config import ScoreConfig, TrainConfig
from slm_train.model import Llama
from slm_train.score import score
from slm_train.train import Trainer


def time_training(cfg: TrainConfig, steps: int) -> float:
    """Tokens/s over `steps` optimizer steps after one warm-up step."""
    trainer = Trainer(cfg)
    trainer.optimizer_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.optimizer_step()
    return steps * trainer.tokens_per_step / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=128, help="model width (4 layers, 4 heads)")
    p.add_argument("--seq_len", type=int, default=256, help="tokens per row")
    p.add_argument("--batch", type=int, default=8, help="rows per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = Path(tempfile.mkdtemp(prefix="slm-bench-"))
    tokens = a.batch * a.seq_len * (a.steps + 2)
    corpora = pipeline.build_corpora(root, a.seq_len, clean=a.seq_len * 40, base=a.seq_len * 8, noisy=tokens,
                                     heldout=16, vocab=1024)
    model_cfg = pipeline.model_of(a.hidden, 4, 4)
    ref = root / "ref.pt"
    torch.manual_seed(0)
    checkpoint.save(ref, Llama(dataclasses.replace(model_cfg, vocab_size=1024)), None, 0, 0, {})
    t0 = time.perf_counter()
    scores = score(ScoreConfig(data_dir=str(corpora.noisy), ckpt=str(ref), out_dir=str(root / "scores"),
                               num_threads=a.threads, batch_size=a.batch))
    score_tps = json.loads((corpora.noisy / "meta.json").read_text())["num_tokens"] / (time.perf_counter() - t0)
    common = TrainConfig(data_dir=str(corpora.noisy), scores_dir="", model=model_cfg, batch_size=a.batch,
                         max_tokens=tokens, num_threads=a.threads, progress=False, eval_every=0)
    rows = []
    for name, kw in (("clm", {}), ("slm 60%", dict(mode="slm", ratio=0.6, scores_dir=str(scores))),
                     ("random 60%", dict(mode="random", ratio=0.6))):
        rows.append((name, time_training(dataclasses.replace(common, out_dir=str(root / name), **kw), a.steps)))
    base = rows[0][1]
    print(f"\nSLM cost, hidden {a.hidden}, {a.batch}x{a.seq_len} tokens/step, {a.threads} threads")
    print(f"{'pass':<22}{'tokens/s':>10}{'vs clm':>9}")
    for name, tps in rows + [("scoring (inference)", score_tps)]:
        print(f"{name:<22}{tps:>10.0f}{tps / base:>8.2f}x")


if __name__ == "__main__":
    main()
