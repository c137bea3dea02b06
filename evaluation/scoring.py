"""Re-derive predictions and grade samples; metrics exactly as the harness's `evaluate()` (HARNESS.md §9).

Items that need no sympy are decided in-process first (string and float comparisons only: same result, much
faster). Every other item parses model text with sympy, which evaluates it, so it is graded in the sandbox
(evaluation/sandbox.py), one throwaway child per item forked from a warm worker: past the per-item limit it counts
as a timeout (False, counted in `timeout_samples`); a child that dies or answers nonsense counts as wrong, as a
crashed worker did in the harness.
"""
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from evaluation import sandbox
from evaluation.data import parse_ground_truth
from evaluation.executor import ExecutorConfig
from evaluation.extract import predict
from evaluation.grade import quick_equal
from evaluation.tool_loop import pal_prediction

GRADE_TIMEOUT_S = 3.0  # the harness's pebble map timeout


def grade_pairs(
    pairs: list[tuple[Any, Any]], num_workers: int | None = None, timeout_s: float = GRADE_TIMEOUT_S,
    on_done: Callable[[], None] | None = None, unsafe: bool = False,
) -> tuple[list[bool], int]:
    """Scores for (pred, gt) pairs and the number of timeouts."""
    scores: list[bool | None] = [quick_equal(pred, gt) for pred, gt in pairs]
    slow = [i for i, score in enumerate(scores) if score is None]
    if not slow:
        return [bool(score) for score in scores], 0
    workers = sandbox.pool(unsafe)
    limits = ExecutorConfig().limits()

    def grade(index: int) -> str:
        job = {"kind": "grade", "prediction": str(pairs[index][0]), "reference": str(pairs[index][1]),
               "timeout_s": timeout_s, "limits": limits}  # fmt: skip
        reply = workers.run_job(job)
        if on_done:
            on_done()
        if reply["status"] == "timeout":
            return "timeout"
        return "true" if reply["status"] == "done" and reply["value"]["equal"] else "false"

    with ThreadPoolExecutor(max(1, min(num_workers or os.cpu_count() or 1, len(slow)))) as threads:
        outcomes = list(threads.map(grade, slow))
    for i, outcome in zip(slow, outcomes):
        scores[i] = outcome == "true"
    return [bool(score) for score in scores], outcomes.count("timeout")


def dedup_sorted(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if samples and "idx" in samples[0]:
        return sorted({sample["idx"]: sample for sample in samples}.values(), key=lambda s: s["idx"])
    return [dict(idx=i, **sample) for i, sample in enumerate(samples)]


def repredict(sample: dict[str, Any], data_name: str, prompt_type: str, executor=None) -> None:
    """Recompute `pred` (and for pal `report`) from `code`, as `evaluate(..., execute=True)` does."""
    if prompt_type == "pal":
        pairs = [pal_prediction(code, executor) for code in sample["code"]]
        sample["pred"], sample["report"] = [p for p, _ in pairs], [r for _, r in pairs]
        return
    sample["pred"] = [predict(code, data_name) for code in sample["code"]]
    sample["report"] = [None for _ in sample["code"]]


def evaluate(
    samples: list[dict[str, Any]], data_name: str, prompt_type: str, execute: bool = True,
    executor=None, num_workers: int | None = None, on_done: Callable[[], None] | None = None,
    grade_timeout_s: float = GRADE_TIMEOUT_S,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Grade samples in place; returns (samples sorted by idx, metrics)."""
    samples = dedup_sorted(samples)
    for sample in samples:
        sample["gt_cot"], sample["gt"] = parse_ground_truth(sample, data_name)
        if "pred" not in sample or execute:
            repredict(sample, data_name, prompt_type, executor)
    pairs = [(pred, sample["gt"]) for sample in samples for pred in sample["pred"]]
    unsafe = bool(executor and executor.unsafe)
    scores, num_timeouts = grade_pairs(pairs, num_workers, grade_timeout_s, on_done, unsafe)
    offset = 0
    for sample in samples:
        sample["score"] = scores[offset : offset + len(sample["pred"])]
        offset += len(sample["pred"])
    return samples, metrics(samples, len(scores), num_timeouts)


def metrics(samples: list[dict[str, Any]], num_scores: int, num_timeouts: int) -> dict[str, Any]:
    if not samples:
        return {"num_samples": 0, "num_scores": 0, "timeout_samples": 0, "empty_samples": 0, "acc": 0.0}
    width = max(len(sample["score"]) for sample in samples)
    # The harness pads shorter score rows with their last value and reports column 0.
    matrix = np.array([s["score"] + [s["score"][-1]] * (width - len(s["score"])) for s in samples], dtype=float)
    result: dict[str, Any] = {
        "num_samples": len(samples),
        "num_scores": num_scores,
        "timeout_samples": num_timeouts,
        "empty_samples": sum(1 for s in samples if not s["pred"][-1]),
        "acc": float(np.round(matrix.mean(axis=0) * 100, decimals=1)[0]),
    }
    if "type" in samples[0]:
        by_type: dict[str, list[bool]] = {}
        for sample in samples:
            by_type.setdefault(sample["type"], []).append(sample["score"][-1])
        result["type_acc"] = {k: float(np.round(np.mean(v) * 100, decimals=1)) for k, v in sorted(by_type.items())}
    return result
