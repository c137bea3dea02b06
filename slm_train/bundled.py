"""The recipe that produces the bundled default model `models/rho-math-tiny/` (run: `python -m slm_train.bundled`).

Llama, hidden 128, 4 layers, context 2048, trained at 512 tokens per row so that few-shot prompts stay within the
positions it has seen. Steps: base (causal LM on the noisy corpus) -> reference (base + clean data) -> scores ->
SLM at 60% from the base on the noisy corpus -> export -> held-out accuracy through rho-serve's engine -> model card.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from slm_train import checkpoint, pipeline
from slm_train.config import ExportConfig, TrainConfig
from slm_train.evaluate import accuracy, constant_answer_accuracy
from slm_train.export import export
from slm_train.math_corpus import heldout_problems
from slm_train.train import train

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", default="runs/bundled", help="where corpora, checkpoints and logs go")
    p.add_argument("--out_dir", default=str(ROOT / "models" / "rho-math-tiny"), help="exported model folder")
    p.add_argument("--scale", type=float, default=1.0, help="multiplier on every token budget")
    p.add_argument("--num_threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args(argv)
    work = Path(a.work_dir)
    s = lambda n: int(n * a.scale)  # noqa: E731
    corpora = pipeline.build_corpora(work, 512, s(250_000), s(500_000), max_number=20)
    model = pipeline.model_of(128, 4, 4)
    common = dict(model=model, batch_size=8, lr=2e-3, min_lr=2e-4, warmup_steps=20, eval_every=25,
                  num_threads=a.num_threads)
    _, ref = pipeline.base_and_reference(work, corpora, TrainConfig(max_tokens=s(120_000), **common),
                                         TrainConfig(max_tokens=s(250_000), **common))
    scores = pipeline.score_corpus(work, corpora, ref, a.num_threads)
    slm_dir = work / "slm60"
    if not (slm_dir / "ckpt.pt").exists():
        train(TrainConfig(data_dir=str(corpora.noisy), scores_dir=str(scores), out_dir=str(slm_dir), mode="slm",
                          ratio=0.6, init_from=str(work / "base" / "ckpt.pt"), max_tokens=s(500_000),
                          eval_data=str(corpora.heldout), **common))
    out = export(ExportConfig(ckpt=str(slm_dir / "ckpt.pt"), data_dir=str(corpora.noisy), out_dir=a.out_dir))
    results = measure(out, a.num_threads)
    results["heldout_loss"] = {name: _final_eval(work / name) for name in ("base", "reference", "slm60")}
    results["mean_ref_loss_by_label"] = json.loads((scores / "meta.json").read_text())["mean_loss_by_label"]
    results["selected_share"] = _last_share(slm_dir)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    (out / "README.md").write_text(card(results, checkpoint.load(slm_dir / "ckpt.pt"), a.scale))
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=1))


def _final_eval(run_dir: Path) -> float:
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["eval_loss"] for r in rows if "eval_loss" in r][-1]


def _last_share(run_dir: Path) -> dict:
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if '"selected_share"' in x]
    tail = rows[-len(rows) // 4:]
    return {k: sum(r["selected_share"][k] for r in tail) / len(tail) for k in tail[0]["selected_share"]}


def card(r: dict, state: dict, scale: float) -> str:
    mc, tc = state["model_config"], state["train_config"]
    params = sum(v.numel() for v in state["model"].values())
    shares = ", ".join(f"{k} {v:.0%}" for k, v in r["selected_share"].items())
    ref_losses = ", ".join(f"{k} {v:.2f}" for k, v in r["mean_ref_loss_by_label"].items())
    return CARD.format(params=params / 1e6, mc=mc, tc=tc, tokens=state["tokens"], scale=scale, shares=shares,
                       ref_losses=ref_losses, hl=r["heldout_loss"], acc0=r["accuracy_0shot"],
                       acc3=r["accuracy_3shot"], n=r["heldout_word_problems"], sample=r["samples"][0].strip(),
                       const=r["constant_answer_accuracy"], distinct=r["distinct_answers_0shot"])


CARD = """---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags: [llama, math, selective-language-modeling, rho-1]
---
# rho-math-tiny

The default model of rho-serve: a {params:.2f}M-parameter Llama trained on CPU with **Selective Language Modeling**
(Rho-1, arXiv 2404.07965) by this repository's `slm_train` pipeline. It writes GSM8K-style solutions in the
`Question: ...\\nAnswer: ... The answer is N.` format but, at this size and CPU budget, it has not learned the arithmetic: its accuracy is at the level of
guessing a frequent answer (below). It is a demonstration model that exercises the whole pipeline and the server,
not a capable one.

## Use
```
rho-serve                                  # serves this folder by default
rho-serve --model-id models/rho-math-tiny
python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('models/rho-math-tiny')"
```
Prompt: `Question: Tina has 3 cookies. Tina gets 4 more cookies. How many cookies does Tina have now?\nAnswer:`
(greedy; it ends its solution with `The answer is N.`; stop at `\n\n\n` or `Question:`).

## Model
LlamaForCausalLM, hidden {mc[hidden_size]}, {mc[num_hidden_layers]} layers, {mc[num_attention_heads]} heads,
MLP {mc[intermediate_size]}, vocabulary {mc[vocab_size]} (SentencePiece BPE, byte fallback, split digits, BOS added),
context {mc[max_position_embeddings]} (trained on rows of 512 tokens: prompts beyond ~512 tokens are out of
distribution), float32 weights.

## Recipe (`python -m slm_train.bundled --scale {scale}`; `slm_train/bundled.py`)
1. Corpora (built in, seeded): clean problems (word problems, arithmetic, fractions, percentages, linear equations;
   operands <= 20) and a noisy "web" corpus of the same kind of problems with labelled noise: navigation/boilerplate,
   markup, wrong arithmetic results, random strings.
2. Base: causal LM on the noisy corpus. Reference: the base fine-tuned on clean text (as in Rho-1, both start from
   the same base). Scores: the reference's loss on every token of the noisy corpus.
3. This model: the base trained on the noisy corpus with SLM (eq. 4), keeping the top {tc[ratio]:.0%} of tokens by
   excess loss `L_theta - L_ref` in each batch, for {tokens:,} processed tokens; AdamW lr {tc[lr]}, cosine,
   batch {tc[batch_size]} x 512 tokens.

## Measured here
| | value |
|---|---|
| held-out clean loss: base / reference / this model | {hl[base]:.3f} / {hl[reference]:.3f} / {hl[slm60]:.3f} |
| greedy accuracy on {n} held-out word problems, 0-shot (rho-serve engine) | {acc0:.1%} |
| same, 3-shot | {acc3:.1%} |
| always answering the most frequent answer (the floor) | {const:.1%} |
| distinct answers given (0-shot) | {distinct} of {n} |
| share of each token type SLM kept (last quarter of training) | {shares} |
| mean reference loss per token type | {ref_losses} |

Sample (0-shot): `{sample}`

## Evaluation with rho-eval (GSM8K, MATH-500)
<!-- EVAL-RESULTS: to be filled by the evaluation engineer (rho-eval few-shot CoT numbers) -->
_Not yet measured._

## Limitations
Tiny and trained for minutes on CPU: it has seen only synthetic problems with small numbers, fails on real GSM8K
text and long few-shot prompts, and should be expected to score near 0% on GSM8K and MATH-500.
"""


def measure(model_dir: Path, num_threads: int) -> dict:
    problems = heldout_problems(100, 20)
    shots = heldout_problems(3, 20, seed=999)
    zero = accuracy(model_dir, problems, num_threads=num_threads)
    few = accuracy(model_dir, problems, shots=shots, num_threads=num_threads)
    return {"heldout_word_problems": len(problems), "accuracy_0shot": zero["accuracy"],
            "accuracy_3shot": few["accuracy"], "distinct_answers_0shot": zero["distinct_answers"],
            "constant_answer_accuracy": constant_answer_accuracy(problems), "samples": zero["completions"][:3]}


if __name__ == "__main__":
    main()
