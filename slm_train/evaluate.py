"""Held-out evaluation of an exported model: greedy answer accuracy on clean word problems, generated through
rho-serve's engine (the same path that serves the model), in the `Question: ...\nAnswer:` format, stopping at EOS.
"""
from __future__ import annotations

import re
from pathlib import Path

from slm_train.arith import Problem

ANSWER = re.compile(r"The answer is (-?[\d,]+)")


def extract_answer(text: str) -> int | None:
    """The number after the first "The answer is" of the completion's first answer (before any next question)."""
    m = ANSWER.search(text.split("Question:")[0])
    if m is None:
        return None
    try:
        return int(m.group(1).replace(",", ""))
    except ValueError:
        return None


def accuracy(model_dir: Path, problems: list[Problem], max_new_tokens: int = 64, num_threads: int | None = None,
             keep: int = 5) -> dict:
    """Greedy generation for every problem in one engine batch; returns accuracy and the first `keep` completions."""
    from server.config import EngineConfig
    from server.engine import Engine
    from server.protocol import EngineRequest, SamplingParams

    engine = Engine(EngineConfig(model_id=str(model_dir), num_threads=num_threads))
    tok = engine.checkpoint.tokenizer
    params = SamplingParams(max_new_tokens=max_new_tokens)
    requests = [EngineRequest(f"p{i}", tuple(tok(p.prompt()).input_ids), params) for i, p in enumerate(problems)]
    results = engine.generate(requests)
    completions = [tok.decode([e.token_id for e in results[f"p{i}"] if e.error is None], skip_special_tokens=True)
                   for i in range(len(problems))]
    predictions = [extract_answer(c) for c in completions]
    correct = [a == p.answer for a, p in zip(predictions, problems)]
    exact = [c.strip() == p.solution.strip() for c, p in zip(completions, problems)]
    return {"accuracy": sum(correct) / len(problems), "exact_solution": sum(exact) / len(problems),
            "num": len(problems), "completions": completions[:keep],
            "distinct_answers": len(set(predictions) - {None})}
