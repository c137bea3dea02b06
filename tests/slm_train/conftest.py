"""A toy `arith` corpus set (clean set, base and arms' noisy corpora, held-out problems; tokenizer trained here) and
a toy model shape, built once per session."""
from __future__ import annotations

import pytest

from slm_train import pipeline
from slm_train.config import ModelConfig, TrainConfig

TOY_MODEL = ModelConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2)


@pytest.fixture(scope="session")
def toy_corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("slm-corpora")
    return pipeline.build_corpora(root, seq_len=128, clean=12_000, base=4_000, noisy=16_000, heldout=24, vocab=1024)


def toy_train_config(**kw) -> TrainConfig:
    base = dict(model=TOY_MODEL, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, max_tokens=4 * 128 * 6,
                num_threads=1, progress=False, eval_every=3)
    return TrainConfig(**{**base, **kw})
