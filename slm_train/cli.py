"""`slm-train`: the command line of the SLM pipeline (data, reference, score, train, export, experiment).

Every subcommand's flags are generated from its config dataclass (config.py), each with help text. User mistakes
(SLMError) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from slm_train import distributed
from slm_train.config import (DataConfig, ExportConfig, ScoreConfig, SLMError, TrainConfig, add_arguments,
                              from_args)
from slm_train.experiment import ExperimentConfig


def _commands() -> dict:
    from slm_train import data, experiment, export, reference, score, train

    return {
        "data": (DataConfig, data.build, "generate or read a corpus, tokenize and pack it"),
        "reference": (TrainConfig, reference.train_reference, "train the reference model on a clean corpus"),
        "score": (ScoreConfig, score.score, "store every token's reference loss (memory-mapped shards)"),
        "train": (TrainConfig, train.train, "train with causal LM, SLM or random selection (torchrun for DDP)"),
        "export": (ExportConfig, export.export, "write a Hugging Face folder rho-serve and transformers load"),
        "experiment": (ExperimentConfig, experiment.run, "the miniature Rho-1 replication with report and plots"),
    }


def parser(commands: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slm-train", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in commands.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text), cls)
    return p


def main(argv: list[str] | None = None) -> int:
    commands = _commands()
    args = parser(commands).parse_args(argv)
    cls, fn, _ = commands[args.command]
    try:
        result = fn(from_args(cls, args))
    except SLMError as e:
        print(f"slm-train {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
