"""Loading real checkpoint layouts: Rho-Math's own configs (at reduced width), RoPE scaling, shards, tied
embeddings; and clear errors for what cannot be served."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from server.loader import CheckpointError
from tests.tiny_checkpoint import build_checkpoint

# config.json of microsoft/rho-math-1b-v0.1 (TinyLlama shape) and rho-math-7b-v0.1 (Mistral-7B shape), as published.
RHO_MATH_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
    "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
    "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.36.2", "use_cache": True,
    "vocab_size": 32000,
}
RHO_MATH_7B = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.36.2", "use_cache": True, "vocab_size": 32000,
}


def reduced(config: dict, **overrides) -> dict:
    """The real config at reduced width: same head ratio (GQA), head_dim 16, 2 layers, the test vocabulary."""
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    small = dict(config, hidden_size=16 * heads // 4, num_attention_heads=heads // 4, num_key_value_heads=kv // 4 or 1,
                 intermediate_size=96, num_hidden_layers=2, vocab_size=1024, initializer_range=0.08)
    small.update(overrides)
    return small


def write_checkpoint(path, config: dict, tokenizer_dir, seed=0):
    """Save random weights for `config` with transformers, keeping config.json as given (the published format)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
    model.save_pretrained(path)
    (path / "config.json").write_text(json.dumps(config))  # save_pretrained rewrites it in the new format
    for f in tokenizer_dir.iterdir():
        if f.is_file() and "token" in f.name:
            shutil.copy(f, path / f.name)
    return path


def assert_logits_match(make_engine, path, prompt_len=80):
    engine = make_engine(model_id=str(path))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt = [1] + list(range(10, 10 + prompt_len - 1))
    with torch.inference_mode():
        ref = hf(torch.tensor([prompt])).logits[0].float()
    ours = engine.prompt_logits(prompt)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


@pytest.mark.parametrize("config", [RHO_MATH_1B, RHO_MATH_7B], ids=["rho-math-1b", "rho-math-7b"])
def test_rho_math_configs_load_and_match_transformers(make_engine, tmp_path, tokenizer_dir, config):
    small = reduced(config, sliding_window=24) if "sliding_window" in config else reduced(config)
    assert_logits_match(make_engine, write_checkpoint(tmp_path / "m", small, tokenizer_dir))


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
])
def test_rope_scaling_matches_transformers(make_engine, tmp_path, tokenizer_dir, scaling):
    config = reduced(RHO_MATH_1B, rope_scaling=scaling, rope_theta=500000.0)
    path = write_checkpoint(tmp_path / "m", config, tokenizer_dir)
    assert_logits_match(make_engine, path, prompt_len=150)


def test_sharded_and_tied_checkpoints(make_engine, tmp_path, tokenizer_dir):
    path = build_checkpoint(tmp_path / "sharded", tokenizer_dir, tie_word_embeddings=True, shard_size="100KB")
    assert (path / "model.safetensors.index.json").exists() and len(list(path.glob("*.safetensors"))) > 1
    assert_logits_match(make_engine, path)


def test_unsupported_architecture_is_a_clear_error(make_engine, tmp_path, tiny_llama_dir):
    path = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(config, architectures=["GPT2LMHeadModel"])))
    with pytest.raises(CheckpointError, match="unsupported architecture 'GPT2LMHeadModel'"):
        make_engine(model_id=str(path))


def test_missing_files_are_clear_errors(make_engine, tmp_path, tiny_llama_dir):
    with pytest.raises(CheckpointError, match="not a local folder"):
        make_engine(model_id=str(tmp_path / "nowhere"))
    path = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        make_engine(model_id=str(path))
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        make_engine(model_id=str(path))


def test_mismatched_weights_are_clear_errors(make_engine, tmp_path, tiny_llama_dir):
    path = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, path)
    weights = load_file(path / "model.safetensors")
    weights["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(weights, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="up_proj|gate_up_proj"):
        make_engine(model_id=str(path))
    del weights["model.layers.0.mlp.up_proj.weight"]
    save_file(weights, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        make_engine(model_id=str(path))
