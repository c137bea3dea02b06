"""Shared fixtures: tiny real checkpoints built once per session (tokenizer trained here, random weights)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through triton's interpreter (how GPU kernels are tested here).
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.tiny_checkpoint import build_checkpoint, train_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer_dir):
    """Llama, GQA (4 query heads, 2 KV heads), untied embeddings, vocab 1024, hidden 64, 2 layers."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory, tokenizer_dir):
    """Mistral with a 32-token sliding window and tied embeddings."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny-mistral"), tokenizer_dir, arch="mistral",
                            sliding_window=32, tie_word_embeddings=True, seed=1)
