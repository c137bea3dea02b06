"""The issue's six acceptance criteria, computed from the collected results (3-seed means; SE = std / sqrt(seeds)).

Definitions used (stated in the report too): "accuracy" is the final greedy accuracy through rho-serve's engine;
"reaches CLM's final accuracy" is read on the teacher-forced exact-solution curves (the only ones with >= 10
points), against CLM's final value on the same curve; "beats by > 2 SE" and "no better" use the SE of the
difference of two arms' means, sqrt(SE_a^2 + SE_b^2).
"""
from __future__ import annotations

import math

from slm_train.results import by_arm, curve, mean_std, se, tokens_to_reach


def _acc(runs: list[dict]) -> list[float]:
    return [r["final"]["accuracy"] for r in runs]


def _se_diff(a: list[float], b: list[float]) -> float:
    return math.hypot(se(a), se(b))


def speedups(clm: list[dict], slm: list[dict]) -> dict:
    """Tokens the SLM arm needs to reach CLM's final teacher-forced accuracy: on the mean curves and per seed."""
    cx, cm, _ = curve(clm, "tf_accuracy")
    sx, sm, _ = curve(slm, "tf_accuracy")
    budget = float(cx[-1])
    need = tokens_to_reach(sx, sm, float(cm[-1])) if cm[-1] > cm[0] else None
    per_seed = []
    for c, s in zip(clm, slm):
        cx1, cy1, _ = curve([c], "tf_accuracy")
        sx1, sy1, _ = curve([s], "tf_accuracy")
        n = tokens_to_reach(sx1, sy1, float(cy1[-1])) if cy1[-1] > cy1[0] else None
        per_seed.append(budget / n if n else None)
    return {"target": float(cm[-1]), "budget": budget, "tokens_needed": need,
            "speedup": budget / need if need else None, "per_seed_speedup": per_seed}


def criteria(results: dict) -> list[dict]:
    arms = by_arm(results["runs"])
    floor = max(results["floors"].values())
    clm = _acc(arms["clm"])
    out = []
    m = mean_std(clm)[0]
    out.append({"n": 1, "text": "CLM's final exact accuracy >= 15% and >= 3x the floor",
                "met": m >= 0.15 and m >= 3 * floor,
                "numbers": f"CLM {m:.1%}; floor {floor:.1%} (3x = {3 * floor:.1%})"})
    refs = [r["final"]["accuracy"] for k, r in results["stages"].items() if k.startswith("reference/")]
    rm = mean_std(refs)[0] if refs else float("nan")
    out.append({"n": 2, "text": "the reference (clean-only control) is >= 15 points more accurate than CLM",
                "met": rm - m >= 0.15, "numbers": f"reference {rm:.1%}, CLM {m:.1%}: {100 * (rm - m):+.1f} points"})
    slm = {a: _acc(r) for a, r in arms.items() if a.startswith("slm")}
    best = max(slm, key=lambda a: mean_std(slm[a])[0])
    sp = speedups(arms["clm"], arms[best])
    per = [x for x in sp["per_seed_speedup"]]
    ok3 = sp["speedup"] is not None and sp["speedup"] >= 3 and all(x is not None and x >= 2.5 for x in per)
    out.append({"n": 3, "text": "the best SLM arm reaches CLM's final accuracy with <= 1/3 of CLM's tokens (mean "
                                "curve), every seed >= 2.5x", "met": ok3,
                "numbers": f"best arm {best}; CLM final teacher-forced {sp['target']:.1%}; mean-curve speed-up "
                           + (f"{sp['speedup']:.2f}x" if sp["speedup"] else "undefined (CLM's curve never rose)"
                              if sp["target"] <= 0 else "never reached")
                           + "; per seed " + ", ".join(f"{x:.2f}x" if x else "never" for x in per)})
    ok4, nums = best in ("slm40", "slm60", "slm80"), [f"best {best} {mean_std(slm[best])[0]:.1%}"]
    for other, accs in (("slm20", slm.get("slm20")), ("clm", clm)):
        if accs is None:
            ok4 = False
            continue
        d, e = mean_std(slm[best])[0] - mean_std(accs)[0], _se_diff(slm[best], accs)
        ok4 = ok4 and d > 2 * e
        nums.append(f"vs {other}: {100 * d:+.1f} points, 2 SE = {200 * e:.1f}")
    out.append({"n": 4, "text": "the best ratio is one of 40/60/80 and beats both 20 and 100 (CLM) by > 2 SE",
                "met": ok4, "numbers": "; ".join(nums)})
    rnd = _acc(arms.get("random60", []))
    if rnd:
        d, e = mean_std(rnd)[0] - m, _se_diff(rnd, clm)
        out.append({"n": 5, "text": "random-60 is no better than CLM (mean not above CLM's by more than 2 SE)",
                    "met": d <= 2 * e, "numbers": f"random-60 {mean_std(rnd)[0]:.1%}, CLM {m:.1%}: "
                                                  f"{100 * d:+.1f} points, 2 SE = {200 * e:.1f}"})
    if "slm60" in arms:
        wrong = mean_std([r["selected_share"].get("wrong", float("nan")) for r in arms["slm60"]])[0]
        right = mean_std([r["selected_share"].get("result", float("nan")) for r in arms["slm60"]])[0]
        out.append({"n": 6, "text": "at 60%: wrong digits kept <= 35%, correct result digits kept >= 80%",
                    "met": wrong <= 0.35 and right >= 0.80,
                    "numbers": f"wrong digits kept {wrong:.1%}, correct result digits kept {right:.1%} "
                               "(mean over training and seeds)"})
    return out
