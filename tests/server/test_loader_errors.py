"""Broken checkpoints are one clear line (issue #15): config.json checked first, unreadable or empty safetensors,
non-finite weights; and the CLI exits 2 with that line, no traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from server import EngineConfig
from server.engine import Engine
from server.loader import CheckpointError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path, tiny_llama_dir) -> Path:
    path = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, path)
    return path


def _set_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("changes,message", [
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
    ({"max_position_embeddings": 0}, "max_position_embeddings must be a positive integer, got 0"),
    ({"hidden_size": -64}, "hidden_size must be a positive integer, got -64"),
    ({"vocab_size": "1024"}, "vocab_size must be a positive integer, got '1024'"),
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be a small positive number"),
])
def test_bad_config_values_are_named_before_anything_loads(copy, changes, message):
    _set_config(copy, **changes)
    (copy / "tokenizer.json").write_text("not a tokenizer")  # config first: the tokenizer is not blamed
    with pytest.raises(CheckpointError, match=message):
        Engine(EngineConfig(model_id=str(copy)))


@pytest.mark.parametrize("content,message", [(b"", "is empty"),
                                             (b"\x07" * 64, "is not a readable safetensors file")])
def test_empty_or_corrupt_safetensors_is_one_clear_error(copy, content, message):
    (copy / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        Engine(EngineConfig(model_id=str(copy)))


def test_non_finite_weights_refuse_to_load(copy):
    weights = load_file(copy / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"][0, :3] = torch.tensor([float("nan"), float("inf"), 1.0])
    save_file(weights, copy / "model.safetensors")
    with pytest.raises(CheckpointError, match="down_proj.weight has 2 NaN or infinite values"):
        Engine(EngineConfig(model_id=str(copy)))


def test_cli_exits_2_with_one_line_on_a_corrupt_checkpoint(copy):
    (copy / "model.safetensors").write_bytes(b"\x07" * 64)
    out = subprocess.run([sys.executable, "-m", "router", "--model-id", str(copy), "--port", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "is not a readable safetensors file" in errors[0], out.stderr
