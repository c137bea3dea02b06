"""The held-out set: clean problems from an unused seed (arith.heldout_problems), stored as `problems.jsonl`, and
the cheap in-training evaluation on them: clean loss over every token and teacher-forced exact-solution accuracy.

Each problem is one right-padded row BOS Question...Answer: solution EOS (no packing, so no other document is in
its context). A problem counts as solved when the argmax at every solution position (and at the EOS) is the true
token: exactly the case in which greedy decoding writes the true solution and stops.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from slm_train.arith import Problem, heldout_problems
from slm_train.config import SLMError


def write(out_dir: Path, num: int, tokenizer_dir: Path) -> Path:
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": p.question, "steps": p.steps, "answer": p.answer}) for p in heldout_problems(num)]
    (out_dir / "problems.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copytree(tokenizer_dir, out_dir / "tokenizer", dirs_exist_ok=True)
    return out_dir


def read(folder: Path) -> list[Problem]:
    f = Path(folder) / "problems.jsonl"
    if not f.exists():
        raise SLMError(f"{folder}: no problems.jsonl (not a held-out folder)")
    rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return [Problem(r["question"], tuple(tuple(s) for s in r["steps"]), r["answer"]) for r in rows]


class HeldoutSet:
    """Token rows of the held-out problems and the masks the evaluation needs, built once."""

    def __init__(self, folder: Path, tok=None, limit: int = 0):
        from slm_train.tokenizer import load_tokenizer

        self.problems = read(folder)[:limit or None]
        tok = tok or load_tokenizer(Path(folder) / "tokenizer")
        texts = [p.text() for p in self.problems]
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        ids = [[tok.bos_token_id] + x + [tok.eos_token_id] for x in enc["input_ids"]]
        T = max(map(len, ids))
        self.tokens = torch.full((len(ids), T), tok.eos_token_id, dtype=torch.long)  # (N, T)
        self.loss_mask = torch.zeros(len(ids), T, dtype=torch.bool)  # every real target (not BOS, not padding)
        self.solution_mask = torch.zeros(len(ids), T, dtype=torch.bool)  # targets after "Answer:", EOS included
        for i, (row, offsets, p) in enumerate(zip(ids, enc["offset_mapping"], self.problems)):
            self.tokens[i, :len(row)] = torch.tensor(row)
            self.loss_mask[i, 1:len(row)] = True
            start = len(p.prompt())
            first = next(j for j, (s, _) in enumerate(offsets) if s >= start)  # first solution token
            self.solution_mask[i, 1 + first:len(row)] = True

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum())

    @torch.no_grad()
    def evaluate(self, model, device: str = "cpu", batch: int = 128) -> dict:
        """{"eval_loss": mean CE over all real tokens, "tf_accuracy": share of problems solved exactly}."""
        was_training = model.training
        model.eval()
        total, count, solved = 0.0, 0, 0
        for lo in range(0, len(self.tokens), batch):
            tokens = self.tokens[lo:lo + batch].to(device)
            logits = model.logits(tokens[:, :-1]).float()  # (b, T-1, V)
            target = tokens[:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            lm, sm = self.loss_mask[lo:lo + batch, 1:].to(device), self.solution_mask[lo:lo + batch, 1:].to(device)
            total, count = total + float((ce * lm).sum()), count + int(lm.sum())
            right = (logits.argmax(-1) == target) | ~sm
            solved += int(right.all(dim=1).sum())
        model.train(was_training)
        return {"eval_loss": total / count, "tf_accuracy": solved / len(self.tokens)}
