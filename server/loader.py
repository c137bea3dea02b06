"""Checkpoint folder -> model + tokenizer: config.json, one or sharded *.safetensors (with index), tokenizer files,
generation_config.json. Hugging Face `LlamaForCausalLM` and `MistralForCausalLM` layouts.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from server.models.llama import LlamaForCausalLM, ModelConfig

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(ValueError):
    """The folder is not a checkpoint this server can load; the message says why and what to do."""


@dataclass
class Checkpoint:
    """What the rest of the server needs to know about the loaded model (read-only after loading)."""

    model_id: str
    path: Path
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    model_config: ModelConfig
    eos_token_ids: tuple[int, ...]
    dtype: str
    device: str
    generation_config: dict = field(default_factory=dict)
    hf_config: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.model_config.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        return self.model_config.max_position_embeddings


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: missing {path.name}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def parse_model_config(hf: dict) -> ModelConfig:
    archs = hf.get("architectures") or [hf.get("model_type", "?")]
    if archs[0] not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"unsupported architecture {archs[0]!r}: rho-serve serves "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise CheckpointError(f"unsupported rope scaling {rope_type!r}: supported are {', '.join(SUPPORTED_ROPE_TYPES)}")
    num_heads = hf["num_attention_heads"]
    try:
        return ModelConfig(
            architecture=archs[0], vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"], num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rope_scaling=rope if rope_type != "default" else None,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            sliding_window=hf.get("sliding_window") if archs[0] == "MistralForCausalLM" else None,
            attention_bias=bool(hf.get("attention_bias", False)), mlp_bias=bool(hf.get("mlp_bias", False)),
        )
    except KeyError as e:
        raise CheckpointError(f"config.json lacks {e.args[0]!r}") from None


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        missing = [s for s in shards if not (path / s).exists()]
        if missing:
            raise CheckpointError(f"{path}: shards listed in the index are missing: {', '.join(missing)}")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors weights (PyTorch .bin checkpoints are not supported)")
    return files


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    return tensors


def to_engine_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF names -> ours: drop the `model.` prefix, fuse q/k/v and gate/up, tie lm_head when absent."""
    hf = {k.removeprefix("model."): v for k, v in hf.items() if "rotary_emb.inv_freq" not in k}
    out: dict[str, torch.Tensor] = {}
    for name in list(hf):
        if ".q_proj." in name:
            suffix = name.split(".q_proj.")[1]
            base = name.split(".q_proj.")[0]
            out[f"{base}.qkv_proj.{suffix}"] = torch.cat([hf.pop(f"{base}.{p}_proj.{suffix}") for p in "qkv"])
        elif ".gate_proj." in name:
            base, suffix = name.split(".gate_proj.")
            out[f"{base}.gate_up_proj.{suffix}"] = torch.cat([hf.pop(name), hf.pop(f"{base}.up_proj.{suffix}")])
    out.update({k: v for k, v in hf.items() if ".k_proj." not in k and ".v_proj." not in k and ".up_proj." not in k})
    if "lm_head.weight" not in out:
        if not cfg.tie_word_embeddings:
            raise CheckpointError("weights lack lm_head.weight and tie_word_embeddings is false")
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return out


def build_model(path: Path, cfg: ModelConfig, dtype: torch.dtype, device: str) -> LlamaForCausalLM:
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    state = to_engine_state_dict(read_weights(weight_files(path)), cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, param in model.state_dict().items():
        if state[name].shape != param.shape:
            raise CheckpointError(f"{path}: weight {name} has shape {tuple(state[name].shape)}, "
                                  f"config implies {tuple(param.shape)}")
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.rotary = model.rotary.__class__(cfg).to(device)  # buffers were created on the meta device
    return model.eval()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # transformers raises many types for a broken folder
        raise CheckpointError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {e})") from None
    if len(tokenizer) < 16:
        raise CheckpointError(f"{path}: the tokenizer has only {len(tokenizer)} tokens (is protobuf installed?)")
    return tokenizer


def eos_ids(generation_config: dict, hf: dict, tokenizer) -> tuple[int, ...]:
    for source in (generation_config.get("eos_token_id"), hf.get("eos_token_id"), tokenizer.eos_token_id):
        if source is not None:
            return tuple(source) if isinstance(source, list) else (int(source),)
    return ()


def load_checkpoint(model_id: str, dtype: str, device: str) -> tuple[Checkpoint, LlamaForCausalLM]:
    path = Path(model_id).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"model {model_id!r} is not a local folder: pass --model-id with a folder holding "
                              "config.json, *.safetensors and tokenizer files (weights cannot be downloaded here)")
    hf = read_json(path / "config.json")
    cfg = parse_model_config(hf)
    gen = read_json(path / "generation_config.json") if (path / "generation_config.json").exists() else {}
    tokenizer = load_tokenizer(path)
    model = build_model(path, cfg, DTYPES[dtype], device)
    checkpoint = Checkpoint(model_id=model_id, path=path, tokenizer=tokenizer, model_config=cfg,
                            eos_token_ids=eos_ids(gen, hf, tokenizer), dtype=dtype, device=device,
                            generation_config=gen, hf_config=hf)
    logger.info("loaded %s: %s, %d layers, hidden %d, vocab %d, %s on %s", model_id, cfg.architecture,
                cfg.num_layers, cfg.hidden_size, cfg.vocab_size, dtype, device)
    return checkpoint, model
