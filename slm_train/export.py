"""Export a training checkpoint as a Hugging Face `LlamaForCausalLM` folder: config.json, model.safetensors,
generation_config.json, tokenizer files and a README.md model card. Both `rho-serve --model-id DIR` and
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` load it; the weight names need no renaming (model.py).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from slm_train import checkpoint
from slm_train.config import ExportConfig, SLMError
from slm_train.data import PackedData

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def hf_config(model_cfg: dict, dtype: str):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=model_cfg["vocab_size"], hidden_size=model_cfg["hidden_size"],
        intermediate_size=model_cfg["intermediate_size"], num_hidden_layers=model_cfg["num_hidden_layers"],
        num_attention_heads=model_cfg["num_attention_heads"], num_key_value_heads=model_cfg["num_key_value_heads"],
        max_position_embeddings=model_cfg["max_position_embeddings"], rms_norm_eps=model_cfg["rms_norm_eps"],
        rope_theta=model_cfg["rope_theta"], hidden_act="silu", tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, attention_bias=False, mlp_bias=False, torch_dtype=dtype, architectures=["LlamaForCausalLM"],
    )


def export(cfg: ExportConfig, card_text: str | None = None) -> Path:
    from transformers import GenerationConfig

    state = checkpoint.load(cfg.ckpt)
    tok_dir = PackedData(cfg.data_dir).tokenizer_dir
    if not (tok_dir / "tokenizer.json").exists():
        raise SLMError(f"{tok_dir}: no tokenizer.json")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(DTYPES[cfg.dtype]).contiguous() for k, v in state["model"].items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_config(state["model_config"], cfg.dtype).save_pretrained(str(out))
    GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=False).save_pretrained(str(out))
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    if cfg.card:
        shutil.copy(cfg.card, out / "README.md")
    else:
        (out / "README.md").write_text(card_text or default_card(state))
    return out


def default_card(state: dict) -> str:
    tc, mc = state["train_config"], state["model_config"]
    params = sum(v.numel() for v in state["model"].values())
    return (f"# SLM-trained Llama ({params / 1e6:.1f}M parameters)\n\nTrained by `slm-train` in mode "
            f"`{tc['mode']}` (ratio {tc['ratio']}) for {state['tokens']:,} tokens on `{tc['data_dir']}`.\n\n"
            f"Shape: hidden {mc['hidden_size']}, {mc['num_hidden_layers']} layers, {mc['num_attention_heads']} heads, "
            f"vocabulary {mc['vocab_size']}, context {mc['max_position_embeddings']}.\n")
