"""The recipe that produces the bundled default model `models/rho-math-tiny/` (run: `python -m slm_train.bundled`).

The `arith` experiment's SLM recipe for one seed, run longer: base (CLM on the base corpus) -> reference (base + the
clean set) -> scores of a fresh noisy corpus (--noisy_tokens; 0: the experiment's arms' corpus) -> SLM at --ratio
(Rho-1's 60%) from the base for --arm_tokens processed tokens (5M by default, ~3x the experiment's per-arm budget)
-> export -> held-out greedy accuracy through rho-serve's engine -> model card. With --work_dir pointing at the
experiment's out_dir (the default), its finished seed-0 stages are reused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from slm_train import checkpoint, pipeline
from slm_train.arith import floors
from slm_train.config import DataConfig, ExportConfig
from slm_train.data import build
from slm_train.evaluate import accuracy
from slm_train.experiment import ExperimentConfig, common, corpora, run_job, sizes
from slm_train.export import export
from slm_train.heldout import read as read_heldout
from slm_train.model_card import CARD, CHAT_TEMPLATE

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", default="runs/experiment", help="experiment out_dir (finished stages are reused)")
    p.add_argument("--out_dir", default=str(ROOT / "models" / "rho-math-tiny"), help="exported model folder")
    p.add_argument("--ratio", type=float, default=0.6, help="SLM token selection ratio (Rho-1's 60%)")
    p.add_argument("--arm_tokens", type=int, default=5_000_000, help="processed tokens of the SLM run (0: the preset's)")
    p.add_argument("--noisy_tokens", type=int, default=3_000_000,
                   help="train on a fresh noisy corpus of this many tokens, scored by the same reference (0: the "
                        "experiment's arms' corpus)")
    p.add_argument("--num_threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args(argv)
    ecfg = ExperimentConfig(out_dir=a.work_dir, seeds=1, num_threads=a.num_threads, ratios=[str(a.ratio)])
    for stage in ("base/0", "reference/0", "score/0"):
        run_job(ecfg, stage)
    c, sz = corpora(ecfg), sizes(ecfg)
    tokens = a.arm_tokens or sz["arm"]
    name = f"slm{round(a.ratio * 100)}" + ("" if tokens == sz["arm"] else f"_{tokens}")
    sd = pipeline.seed_dir(Path(a.work_dir), 0)
    noisy, scores = c.noisy, sd / "scores"
    if a.noisy_tokens:  # a fresh corpus (seed 4: no other corpus uses it), scored by seed 0's reference
        noisy, scores, name = Path(a.work_dir) / "bundled_noisy", sd / "bundled_scores", name + "_fresh"
        if not (noisy / "meta.json").exists():
            build(DataConfig(out_dir=str(noisy), corpus="noisy", num_tokens=a.noisy_tokens, seq_len=sz["seq_len"],
                             seed=4, tokenizer=str(c.clean / "tokenizer")))
        pipeline.score_stage(scores, sd / "reference" / "ckpt.pt", dataclasses.replace(c, noisy=noisy),
                             a.num_threads)
    tc = dataclasses.replace(common(ecfg, tokens, sz["points"]), data_dir=str(noisy), mode="slm", ratio=a.ratio,
                             scores_dir=str(scores), eval_data=str(c.heldout),
                             init_from=str(sd / "base" / "ckpt.pt"), seed=0, data_seed=0)
    run = pipeline.train_stage(sd / name, tc, c, greedy=False, num_threads=a.num_threads)
    out = export(ExportConfig(ckpt=str(sd / name / "ckpt.pt"), data_dir=str(c.clean), out_dir=a.out_dir),
                 card_text="pending\n")
    problems = read_heldout(c.heldout)
    acc = accuracy(out, problems, num_threads=a.num_threads)
    state = checkpoint.load(sd / name / "ckpt.pt")
    evals = [r for r in run["log"] if "eval_loss" in r]
    facts = {"accuracy": acc["accuracy"], "exact_solution": acc["exact_solution"], "num": len(problems),
             "floors": floors(problems), "sample": acc["completions"][0].strip(), "eval_loss": evals[-1]["eval_loss"],
             "tokens": state["tokens"], "params": sum(v.numel() for v in state["model"].values()),
             "model": state["model_config"], "train": state["train_config"], "sizes": sz,
             "noisy_tokens": json.loads((noisy / "meta.json").read_text())["num_tokens"]}
    (Path(a.work_dir) / "bundled.json").write_text(json.dumps(facts, indent=1))
    (out / "README.md").write_text(card(facts))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    print(json.dumps({k: v for k, v in facts.items() if k not in ("model", "train", "sizes")}, indent=1))


def card(f: dict) -> str:
    m, t, s = f["model"], f["train"], f["sizes"]
    return CARD.format(
        params=f["params"] / 1e6, hidden=m["hidden_size"], layers=m["num_hidden_layers"],
        heads=m["num_attention_heads"], mlp=m["intermediate_size"], vocab=m["vocab_size"],
        ctx=m["max_position_embeddings"], seq_len=s["seq_len"], ratio=t["ratio"], tokens=f["tokens"], lr=t["lr"],
        batch=t["batch_size"], base=s["base"], ref_epochs=s["ref_epochs"], clean=s["clean"],
        acc=f["accuracy"], exact=f["exact_solution"], n=f["num"], eval_loss=f["eval_loss"],
        most=f["floors"]["most_frequent_answer"], last=f["floors"]["last_number_in_question"], sample=f["sample"],
        ratio_pct=round(t["ratio"] * 100), arm_tokens=f["tokens"], noisy_tokens=f["noisy_tokens"])


if __name__ == "__main__":
    main()
