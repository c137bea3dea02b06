"""Step 1 of Rho-1: the reference model, an ordinary causal LM trained on a clean corpus.

As in the paper, the reference may start from the same base checkpoint as the model it will guide (`init_from`)
and is then trained on curated data only; the loop is train.py's, in clm mode.
"""
from __future__ import annotations

from pathlib import Path

from slm_train.config import SLMError, TrainConfig
from slm_train.data import PackedData
from slm_train.train import train


def train_reference(cfg: TrainConfig) -> Path:
    if cfg.mode != "clm":
        raise SLMError("the reference model is trained with plain causal LM (--mode clm)")
    labels = PackedData(cfg.data_dir).labels
    noisy_share = float((labels != 0).mean())
    if noisy_share > 0:
        print(f"warning: {noisy_share:.1%} of the reference corpus's tokens are labelled as noise")
    return train(cfg)
