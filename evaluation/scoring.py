"""Re-derive predictions and grade samples; metrics exactly as the harness's `evaluate()` (HARNESS.md §9).

Grading goes through a process pool with a per-item time limit (timeout -> False, counted in `timeout_samples`);
items that need no sympy are decided in-process first (same result, much faster).
"""
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation.data import parse_ground_truth
from evaluation.extract import predict
from evaluation.grade import math_equal, quick_equal
from evaluation.pool import TIMEOUT, timed_map
from evaluation.tool_loop import pal_prediction

GRADE_TIMEOUT_S = 3.0  # the harness's pebble map timeout


def _math_equal_item(pair: tuple[Any, Any]) -> bool:
    return math_equal(pair[0], pair[1])


def grade_pairs(
    pairs: list[tuple[Any, Any]], num_workers: int | None = None, timeout_s: float = GRADE_TIMEOUT_S,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[bool], int]:
    """Scores for (pred, gt) pairs and the number of timeouts."""
    scores: list[bool | None] = [quick_equal(pred, gt) for pred, gt in pairs]
    slow = [i for i, score in enumerate(scores) if score is None]
    results = timed_map(_math_equal_item, [pairs[i] for i in slow], timeout_s, num_workers, on_done)
    for i, result in zip(slow, results):
        scores[i] = False if result is TIMEOUT else bool(result)
    return [bool(score) for score in scores], sum(result is TIMEOUT for result in results)


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
    scores, num_timeouts = grade_pairs(pairs, num_workers, grade_timeout_s, on_done)
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
