"""Step 3 of Rho-1: the training loop, causal LM (every token), SLM (top --ratio by excess loss) or random selection.

nanoGPT-style: one loop, with evaluation, checkpointing and a log line once in a while. Each optimizer step takes
`batch_size` rows (the global batch), split into `grad_accum` micro-steps, each split evenly over the DDP ranks.
Selection happens per micro-step over the rows of all ranks (rank_scope=global: the excess losses are all-gathered,
so 2 ranks select exactly what 1 process selects) or over each rank's own rows (rank_scope=local). The loss of every
rank is scaled so that DDP's gradient average equals the 1-process gradient of eq. 4 over the micro-step.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from slm_train import checkpoint, distributed
from slm_train.config import SLMError, TrainConfig
from slm_train.data import PackedData, valid_targets
from slm_train.heldout import HeldoutSet
from slm_train.model import Llama
from slm_train.score import ReferenceScores
from slm_train.select import excess_loss, random_scores, top_k_mask

def lr_at(cfg: TrainConfig, step: int, num_steps: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, num_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def build_model(cfg: TrainConfig, vocab_size: int) -> Llama:
    if cfg.init_from:
        model, _ = checkpoint.load_model(cfg.init_from)
        if model.cfg.vocab_size != vocab_size:
            raise SLMError(f"{cfg.init_from}: vocabulary {model.cfg.vocab_size} != corpus vocabulary {vocab_size}")
        return model
    torch.manual_seed(cfg.seed)
    return Llama(dataclasses.replace(cfg.model, vocab_size=vocab_size))


def make_optimizer(model: Llama, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices decay; norms do not
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


def check(cfg: TrainConfig, d: distributed.Dist) -> None:
    if cfg.batch_size % (cfg.grad_accum * d.world_size):
        raise SLMError(f"--batch_size {cfg.batch_size} must be divisible by grad_accum * world size "
                       f"({cfg.grad_accum} * {d.world_size})")
    if cfg.mode != "clm" and not 0.0 < cfg.ratio <= 1.0:
        raise SLMError("--ratio must be in (0, 1]")
    if cfg.mode == "slm" and not cfg.scores_dir:
        raise SLMError("--mode slm needs --scores_dir (from `slm-train score`)")


class Trainer:
    """Holds the run's state; `run()` is the loop."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.d = distributed.setup(cfg.device)
        check(cfg, self.d)
        torch.set_num_threads(cfg.num_threads)
        self.data = PackedData(cfg.data_dir)
        self.scores = ReferenceScores(cfg.scores_dir, self.data) if cfg.scores_dir else None
        self.eval_data = HeldoutSet(cfg.eval_data, limit=cfg.eval_problems) if cfg.eval_data else None  # the same rows for every arm
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model = build_model(cfg, self.data.meta["vocab_size"]).to(self.d.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.tokens_per_step = cfg.batch_size * self.data.seq_len
        self.num_steps = max(1, cfg.max_tokens // self.tokens_per_step)
        self.step = 0
        if cfg.resume and (self.out / "ckpt.pt").exists():
            self._resume()
        self.ddp = DistributedDataParallel(self.model) if self.d.enabled else self.model
        self.order = self.data.order(cfg.data_seed, self.num_steps * cfg.batch_size)
        self.labels = self.data.meta["labels"]

    def _resume(self) -> None:
        state = checkpoint.load(self.out / "ckpt.pt")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]

    # ----- one optimizer step -----
    def micro_rows(self, micro: int) -> np.ndarray:
        """This rank's rows of one micro-step: the global batch is cut into micro-steps, then into rank slices."""
        cfg, d = self.cfg, self.d
        rows = self.order[self.step * cfg.batch_size:(self.step + 1) * cfg.batch_size]
        per_micro = cfg.batch_size // cfg.grad_accum
        per_rank = per_micro // d.world_size
        start = micro * per_micro + d.rank * per_rank
        return rows[start:start + per_rank]

    def select(self, loss: torch.Tensor, labels: torch.Tensor, rows: np.ndarray, micro: int,
               mode: str) -> torch.Tensor:
        """Boolean mask (b, T) of the tokens whose loss is trained on this micro-step (never padding)."""
        valid = valid_targets(labels)
        if mode == "clm":
            return valid
        if mode == "slm":
            scores = excess_loss(loss, self.scores.rows(rows).to(loss.device))
        else:
            shape = (loss.shape[0] * self.d.world_size, loss.shape[1])
            scores = random_scores(shape, self.cfg.seed, self.step * self.cfg.grad_accum + micro)
            scores = scores[self.d.rank * loss.shape[0]:(self.d.rank + 1) * loss.shape[0]].to(loss.device)
        if self.cfg.rank_scope == "local":
            return top_k_mask(scores, valid, self.cfg.ratio)
        everyone = top_k_mask(distributed.all_gather_rows(self.d, scores),
                              distributed.all_gather_rows(self.d, valid), self.cfg.ratio)
        return everyone[self.d.rank * loss.shape[0]:(self.d.rank + 1) * loss.shape[0]]

    def micro_step(self, micro: int, stats: torch.Tensor) -> None:
        rows = self.micro_rows(micro)
        tokens, labels = self.data.rows(rows)
        tokens, labels = tokens.to(self.d.device), labels.to(self.d.device)
        with torch.autocast(self.d.device.split(":")[0], torch.bfloat16, enabled=self.cfg.bf16):
            loss = self.ddp(tokens)  # (b, T) float32 per-token CE
        mask = self.select(loss, labels, rows, micro, self.cfg.mode)
        # A clm run given reference scores logs its loss on the tokens SLM would select (the paper's Fig. 6).
        shadow = self.select(loss, labels, rows, micro, "slm") if self.cfg.mode == "clm" and self.scores else mask
        num_selected = distributed.all_sum(self.d, mask.sum().float())
        # DDP averages gradients over ranks: scale by world size so the result is sum(selected CE) / num_selected.
        scaled = (loss * mask).sum() * self.d.world_size / (num_selected * self.cfg.grad_accum)
        scaled.backward()
        stats += self._stats(loss.detach(), shadow, labels)

    def _stats(self, loss: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[sum CE all, n all, sum CE selected, n selected, selected per label..., tokens per label...,
        sum CE per label...]."""
        valid = valid_targets(labels)
        per_label = [((labels == i) & valid) for i in range(len(self.labels))]
        return torch.tensor([(loss * valid).sum(), valid.sum(), (loss * mask).sum(), mask.sum()]
                            + [(m & mask).sum() for m in per_label] + [m.sum() for m in per_label]
                            + [(loss * m).sum() for m in per_label], dtype=torch.float64)

    def optimizer_step(self) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.cfg, self.step, self.num_steps)
        stats = torch.zeros(4 + 3 * len(self.labels), dtype=torch.float64)
        for micro in range(self.cfg.grad_accum):
            if self.d.enabled and micro < self.cfg.grad_accum - 1:
                with self.ddp.no_sync():
                    self.micro_step(micro, stats)
            else:
                self.micro_step(micro, stats)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return self._log_row(distributed.all_sum(self.d, stats))

    def _log_row(self, s: torch.Tensor) -> dict:
        n_labels = len(self.labels)
        sel, tot, ce = s[4:4 + n_labels], s[4 + n_labels:4 + 2 * n_labels], s[4 + 2 * n_labels:]
        unselected = (s[0] - s[2]) / (s[1] - s[3]) if s[1] > s[3] else float("nan")
        return {"step": self.step, "tokens": self.step * self.tokens_per_step,
                "lr": self.optimizer.param_groups[0]["lr"], "loss": float(s[0] / s[1]),
                "loss_selected": float(s[2] / s[3]), "loss_unselected": float(unselected), "selected": float(s[3] / s[1]),
                "selected_share": {name: float(sel[i] / tot[i]) for i, name in enumerate(self.labels) if tot[i] > 0},
                "loss_by_label": {name: float(ce[i] / tot[i]) for i, name in enumerate(self.labels) if tot[i] > 0},
                "label_count": {name: int(tot[i]) for i, name in enumerate(self.labels) if tot[i] > 0}}

    # ----- evaluation, checkpoints, the loop -----
    def evaluate(self) -> dict:
        """Held-out clean loss and teacher-forced exact-solution accuracy (heldout.py)."""
        return self.eval_data.evaluate(self.model, self.d.device)

    def save(self, name: str = "ckpt.pt", with_optimizer: bool = True) -> None:
        if self.d.is_main:
            checkpoint.save(self.out / name, self.model, self.optimizer if with_optimizer else None, self.step,
                            self.step * self.tokens_per_step, dataclasses.asdict(self.cfg))

    def periodic(self, log) -> None:
        cfg, last = self.cfg, self.step == self.num_steps
        if self.eval_data is not None and self.d.is_main and cfg.eval_every and (
                self.step % cfg.eval_every == 0 or last):
            log({"step": self.step, "tokens": self.step * self.tokens_per_step, **self.evaluate()})
        if last or (cfg.ckpt_every and self.step % cfg.ckpt_every == 0):
            self.save()
            if cfg.keep_ckpts and not last:
                self.save(f"ckpt_{self.step * self.tokens_per_step}.pt", with_optimizer=False)

    def run(self) -> Path:
        cfg = self.cfg
        log_file = (self.out / "log.jsonl").open("a") if self.d.is_main else None

        def log(row: dict) -> None:
            if log_file:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()

        if self.d.is_main:
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            print(f"slm-train {cfg.mode}: {self.model.num_params():,} params, {self.num_steps} steps of "
                  f"{self.tokens_per_step} tokens, world size {self.d.world_size}, config {json.dumps(dataclasses.asdict(cfg))}")
        if self.eval_data is not None and self.step == 0 and self.d.is_main and cfg.eval_every:
            log({"step": 0, "tokens": 0, **self.evaluate()})
        bar = tqdm(total=self.num_steps, initial=self.step, disable=not (cfg.progress and self.d.is_main),
                   desc=cfg.mode)
        self.model.train()
        while self.step < self.num_steps:
            t0 = time.perf_counter()
            row = self.optimizer_step()
            row["tok_s"] = self.tokens_per_step / (time.perf_counter() - t0)
            log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", sel=f"{row['loss_selected']:.3f}", tok_s=f"{row['tok_s']:.0f}")
            self.periodic(log)
        bar.close()
        if log_file:
            log_file.close()
        return self.out / "ckpt.pt"


def train(cfg: TrainConfig) -> Path:
    return Trainer(cfg).run()
