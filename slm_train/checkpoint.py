"""Training checkpoints: one torch file holding weights, model shape, optimizer state and the step (atomic writes)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from slm_train.config import ModelConfig, SLMError
from slm_train.model import Llama


def save(path: Path, model: Llama, optimizer: torch.optim.Optimizer | None, step: int, tokens: int,
         train_config: dict) -> None:
    state = {"model": model.state_dict(), "model_config": dataclasses.asdict(model.cfg), "step": step,
             "tokens": tokens, "train_config": train_config,
             "optimizer": optimizer.state_dict() if optimizer is not None else None}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash never leaves a half-written checkpoint


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SLMError(f"{path}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_model(path: str | Path, device: str = "cpu") -> tuple[Llama, dict]:
    state = load(path)
    model = Llama(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device), state
