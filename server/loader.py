"""Checkpoint folder -> model + tokenizer: config.json, one or sharded *.safetensors (with index), tokenizer files,
generation_config.json. Hugging Face `LlamaForCausalLM` and `MistralForCausalLM` layouts.

Every way a folder can be wrong is one CheckpointError line (the CLI exits 2): config.json is checked first (sizes
positive, heads divide), then each safetensors file must open, then weights must match the config and be finite
(a NaN or inf weight makes every output garbage; a server must not start "healthy" on it).
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


POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OPTIONAL_POSITIVE_INTS = ("num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window")


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_config(hf: dict) -> None:
    """config.json values the model cannot be built from, named before anything else is loaded."""
    for key in POSITIVE_INTS:
        if key not in hf:
            raise CheckpointError(f"config.json lacks {key!r}")
    for key in POSITIVE_INTS + OPTIONAL_POSITIVE_INTS:
        if hf.get(key) is not None and not _is_positive_int(hf[key]):
            raise CheckpointError(f"config.json: {key} must be a positive integer, got {hf[key]!r}")
    heads, kv_heads = hf["num_attention_heads"], hf.get("num_key_value_heads") or hf["num_attention_heads"]
    if heads % kv_heads:
        raise CheckpointError(f"config.json: num_attention_heads ({heads}) must be a multiple of "
                              f"num_key_value_heads ({kv_heads})")
    if not hf.get("head_dim") and hf["hidden_size"] % heads:
        raise CheckpointError(f"config.json: hidden_size ({hf['hidden_size']}) must be a multiple of "
                              f"num_attention_heads ({heads}) when head_dim is not given")
    eps = hf.get("rms_norm_eps", 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise CheckpointError(f"config.json: rms_norm_eps must be a small positive number, got {eps!r}")


def parse_model_config(hf: dict) -> ModelConfig:
    validate_config(hf)
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
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own and OS errors for a broken file
            size = file.stat().st_size if file.exists() else 0
            what = "is empty" if size == 0 else f"is not a readable safetensors file ({type(e).__name__}: {e})"
            raise CheckpointError(f"{file} {what}; re-download or re-export the checkpoint") from None
    return tensors


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face weight names (without the `model.` prefix) and the shapes the config implies."""
    h, q, kv, i = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    shapes = {"embed_tokens.weight": (cfg.vocab_size, h), "norm.weight": (h,), "lm_head.weight": (cfg.vocab_size, h)}
    for n in range(cfg.num_layers):
        p = f"layers.{n}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i)})
        if cfg.attention_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,), p + "self_attn.o_proj.bias": (h,)})
        if cfg.mlp_bias:
            shapes.update({p + "mlp.gate_proj.bias": (i,), p + "mlp.up_proj.bias": (i,), p + "mlp.down_proj.bias": (h,)})
    return shapes


def check_weights(hf: dict[str, torch.Tensor], cfg: ModelConfig, path: Path) -> None:
    expected = expected_hf_shapes(cfg)
    if cfg.tie_word_embeddings and "lm_head.weight" not in hf:
        del expected["lm_head.weight"]
    missing, unexpected = sorted(set(expected) - set(hf)), sorted(set(hf) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match config.json: missing {missing[:4]}"
                              f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}")
    for name, shape in expected.items():
        if tuple(hf[name].shape) != shape:
            raise CheckpointError(f"{path}: weight {name} has shape {tuple(hf[name].shape)}; config.json implies {shape}")
    for name, tensor in hf.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: weight {name} has {bad} NaN or infinite values; the model cannot "
                                  "generate with it (a broken export or an overflowed conversion)")


def to_engine_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Checked HF weights -> ours: fuse q/k/v and gate/up (one matmul each), tie lm_head when absent."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in hf.items():
        if ".q_proj." in name:
            base, suffix = name.split(".q_proj.")
            out[f"{base}.qkv_proj.{suffix}"] = torch.cat([hf[f"{base}.{p}_proj.{suffix}"] for p in "qkv"])
        elif ".gate_proj." in name:
            base, suffix = name.split(".gate_proj.")
            out[f"{base}.gate_up_proj.{suffix}"] = torch.cat([tensor, hf[f"{base}.up_proj.{suffix}"]])
        elif not any(f".{p}_proj." in name for p in ("k", "v", "up")):
            out[name] = tensor
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return out


def build_model(path: Path, cfg: ModelConfig, dtype: torch.dtype, device: str) -> LlamaForCausalLM:
    hf = {k.removeprefix("model."): v for k, v in read_weights(weight_files(path)).items()
          if "rotary_emb.inv_freq" not in k}
    check_weights(hf, cfg, path)
    state = {k: v.to(device=device, dtype=dtype) for k, v in to_engine_state_dict(hf, cfg).items()}
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.load_state_dict(state, assign=True, strict=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.rotary = model.rotary.__class__(cfg).to(device)  # its buffers were created on the meta device
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
