"""Configuration of every slm_train program: one dataclass per program, and argparse generated from them.

Each field carries its help text in `metadata["help"]`, so `slm-train <cmd> --help` documents every flag and the
value actually used is logged (as JSON) at the start of each run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


class SLMError(ValueError):
    """A user mistake (bad flag, missing file, inconsistent data): printed as one line by the CLI, no traceback."""


def opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Shape of the Llama model (HF `LlamaConfig` names)."""

    vocab_size: int = opt(1024, "vocabulary size (set from the tokenizer)")
    hidden_size: int = opt(256, "model width")
    intermediate_size: int = opt(688, "MLP width")
    num_hidden_layers: int = opt(4, "transformer blocks")
    num_attention_heads: int = opt(4, "query heads")
    num_key_value_heads: int = opt(4, "key/value heads (grouped-query attention when fewer than query heads)")
    max_position_embeddings: int = opt(2048, "longest context the exported model accepts")
    rope_theta: float = opt(10000.0, "RoPE base")
    rms_norm_eps: float = opt(1e-5, "RMSNorm epsilon")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class DataConfig:
    """`slm-train data`: build a tokenized, packed corpus folder (and its tokenizer when none is given)."""

    out_dir: str = opt("runs/data", "output folder (tokens.npy, labels.npy, meta.json, tokenizer/)")
    corpus: str = opt("clean", "built-in arith corpus (clean: correct problems only; noisy: the labelled web-like "
                               "mix of noise.MIX) or user files", ("clean", "noisy", "files"))
    files: list = opt([], "user corpus files (.txt: documents separated by a line '<|endoftext|>', .jsonl: 'text' "
                          "field, .parquet: 'text' column); with --corpus files")
    num_tokens: int = opt(1_000_000, "approximate number of tokens (built-in corpora; at most, for files)")
    seq_len: int = opt(256, "row length; whole documents are packed first-fit, the rest is masked padding")
    seed: int = opt(0, "generator and shuffling seed (built-in corpora)")
    wrong_share: float = opt(0.3, "share of the noisy corpus's problems with one wrong (propagated) step")
    tokenizer: str = opt("", "existing tokenizer folder; empty: train one (on the built-in kinds or the files)")
    vocab_size: int = opt(1024, "vocabulary size of a newly trained tokenizer")


@dataclass
class TrainConfig:
    """`slm-train train` / `slm-train reference`: causal LM, SLM or random-selection training."""

    data_dir: str = opt("runs/data", "packed corpus folder from `slm-train data`")
    scores_dir: str = opt("", "reference-loss folder from `slm-train score` (needed by --mode slm; with clm it only logs the loss on the tokens SLM would select)")
    out_dir: str = opt("runs/train", "checkpoints, log.jsonl and config.json go here")
    mode: str = opt("clm", "loss: every token (clm), top --ratio by excess loss (slm), random --ratio (random)",
                    ("clm", "slm", "random"))
    ratio: float = opt(0.6, "token selection ratio k for slm/random")
    rank_scope: str = opt("global", "rank tokens over the global batch of all DDP ranks (global) or per rank (local)",
                          ("global", "local"))
    init_from: str = opt("", "checkpoint (.pt) to start from (weights only; a fresh optimizer and schedule)")
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = opt(16, "sequences per optimizer step, summed over ranks and accumulation steps")
    grad_accum: int = opt(1, "micro-steps per optimizer step")
    max_tokens: int = opt(1_000_000, "training budget in processed tokens (batch_size*seq_len per step)")
    lr: float = opt(1e-3, "peak learning rate")
    min_lr: float = opt(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = opt(50, "linear warmup steps")
    weight_decay: float = opt(0.1, "AdamW weight decay (matrices only)")
    grad_clip: float = opt(1.0, "gradient norm clip (0: off)")
    bf16: bool = opt(False, "bfloat16 autocast for the forward pass (the loss stays float32)")
    seed: int = opt(0, "model initialisation seed")
    data_seed: int = opt(0, "data order seed (same for all arms of an experiment)")
    eval_every: int = opt(50, "steps between held-out clean-loss evaluations (0: off)")
    eval_data: str = opt("", "held-out folder (heldout.py: problems.jsonl) for the clean loss and exact-solution "
                             "accuracy, or a packed corpus folder for the loss only")
    eval_problems: int = opt(0, "held-out problems used by the in-training evaluation (0: all of them)")
    ckpt_every: int = opt(0, "steps between checkpoints (0: only the final one)")
    keep_ckpts: bool = opt(False, "keep every periodic checkpoint as ckpt_<tokens>.pt (for accuracy curves)")
    resume: bool = opt(False, "resume from out_dir/ckpt.pt when it exists")
    num_threads: int = opt(2, "torch CPU threads")
    progress: bool = opt(True, "show a tqdm progress bar")
    device: str = opt("", "cpu or cuda (empty: cuda when available)")


@dataclass
class ScoreConfig:
    """`slm-train score`: per-token reference losses of a packed corpus, in memory-mapped shards."""

    data_dir: str = opt("runs/data", "packed corpus folder")
    ckpt: str = opt("runs/reference/ckpt.pt", "reference model checkpoint")
    out_dir: str = opt("runs/scores", "output folder (shard_*.npy + meta.json)")
    batch_size: int = opt(32, "sequences per forward pass")
    shard_seqs: int = opt(1024, "sequences per shard (the unit of resumption)")
    num_threads: int = opt(2, "torch CPU threads")
    device: str = opt("", "cpu or cuda (empty: cuda when available)")


@dataclass
class ExportConfig:
    """`slm-train export`: a Hugging Face LlamaForCausalLM folder that rho-serve and transformers load."""

    ckpt: str = opt("runs/train/ckpt.pt", "training checkpoint")
    data_dir: str = opt("runs/data", "corpus folder whose tokenizer/ the model was trained with")
    out_dir: str = opt("models/rho-math-tiny", "output folder")
    dtype: str = opt("float32", "weight dtype on disk", ("float32", "bfloat16"))
    card: str = opt("", "Markdown file to use as README.md (empty: a generated card)")


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per dataclass field (nested dataclasses get a prefix, e.g. --model.hidden_size)."""
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if f.name == "model":  # the one nested config
            add_arguments(parser, ModelConfig, prefix=f"{name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"help": f"{f.metadata.get('help', '')} (default: {default})", "dest": name}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list):
            kwargs.update(nargs="*", type=str)
        else:
            kwargs["type"] = type(default)
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(f"--{name}", default=default, **kwargs)


def from_args(cls: type, args: argparse.Namespace, prefix: str = ""):
    values = {}
    for f in dataclasses.fields(cls):
        if f.name == "model":
            values[f.name] = from_args(ModelConfig, args, prefix=f"{prefix}{f.name}.")
        else:
            values[f.name] = getattr(args, prefix + f.name)
    return cls(**values)


def to_json(config) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def train_config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["model"] = ModelConfig(**d.get("model", {}))
    return TrainConfig(**d)
