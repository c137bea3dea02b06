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


@pytest.fixture(scope="session")
def tokenizer(tiny_llama_dir):
    """The tiny checkpoints' tokenizer (trained here, vocabulary 1024) as transformers loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def make_engine(tiny_llama_dir):
    """make_engine(**overrides) -> Engine(EngineConfig(model_id=<tiny Llama>, **overrides)); model_id= overrides too."""
    from server.config import EngineConfig
    from server.engine import Engine

    return lambda **overrides: Engine(EngineConfig(**{"model_id": str(tiny_llama_dir), **overrides}))


@pytest.fixture(scope="session")
def make_client(tiny_llama_dir):
    """make_client(**overrides) -> the async engine client on a fresh engine, one torch thread (a shared CI machine).
    The caller shuts it down."""
    from server import EngineConfig, load_engine_client

    def make(**overrides):
        torch.set_num_threads(1)
        return load_engine_client(EngineConfig(**{"model_id": str(tiny_llama_dir), "num_threads": 1, **overrides}))

    return make


@pytest.fixture(scope="session")
def make_compiler(tokenizer):
    """make_compiler(**options) -> a GrammarCompiler over the tiny tokenizer (vocabulary = the model's)."""
    from grammars.compiler import GrammarCompiler

    return lambda **options: GrammarCompiler(tokenizer, len(tokenizer), tokenizer.eos_token_id, **options)


@pytest.fixture(scope="module")
def compiler(make_compiler):
    """A GrammarCompiler with default options, one per test module (its cache does not leak across modules)."""
    return make_compiler()
