"""Regular expressions for bounded JSON integers (outlines-core 0.2 ignores `minimum` / `maximum`).

`integer_range_regex(low, high)` matches exactly the canonical JSON integers n with low <= n <= high (either bound may
be None: unbounded), no leading zeros, no `-0`. Built digit by digit (the classic range-to-regex construction), so
its size grows with the number of digits, not with the width of the range.
"""
from __future__ import annotations

_ANY_POSITIVE = "[1-9][0-9]*"


def integer_range_regex(low: int | None, high: int | None) -> str:
    parts: list[str] = []
    if low is None or low < 0:  # negative part: -m for m in [max(1, -high), -low]
        neg_low = 1 if high is None or high >= 0 else -high
        neg_high = None if low is None else -low
        parts += [f"-{p}" for p in _naturals(neg_low, neg_high)]
    if high is None or high >= 0:
        parts += _naturals(max(low or 0, 0), high)
    if not parts:
        raise ValueError(f"no integer lies in [{low}, {high}]")
    return "(?:" + "|".join(parts) + ")"


def _naturals(low: int, high: int | None) -> list[str]:
    """Patterns for the integers in [low, high] (low >= 0; high None: unbounded), without leading zeros."""
    if high is None:  # [low, 10^d - 1] then every longer number
        digits = len(str(low))
        return _naturals(low, 10 ** digits - 1) + [f"[1-9][0-9]{{{digits},}}"]
    if low > high:
        return []
    if len(str(low)) < len(str(high)):
        split = 10 ** len(str(low))
        return _naturals(low, split - 1) + _naturals(split, high)
    return _same_length(str(low), str(high))


def _same_length(lo: str, hi: str) -> list[str]:
    """Patterns for the digit strings of one length between lo and hi (inner digits may be 0)."""
    if not lo:
        return [""]
    if lo[0] == hi[0]:
        return [lo[0] + rest for rest in _same_length(lo[1:], hi[1:])]
    n = len(lo) - 1
    if lo[1:] == "0" * n and hi[1:] == "9" * n:  # a whole block: [a-b][0-9]{n}
        return [_digit_class(lo[0], hi[0]) + ("[0-9]" * n)]
    parts = [lo[0] + rest for rest in _same_length(lo[1:], "9" * n)]
    if int(lo[0]) + 1 <= int(hi[0]) - 1:
        parts.append(_digit_class(str(int(lo[0]) + 1), str(int(hi[0]) - 1)) + "[0-9]" * n)
    parts += [hi[0] + rest for rest in _same_length("0" * n, hi[1:])]
    return parts


def _digit_class(a: str, b: str) -> str:
    return a if a == b else f"[{a}-{b}]"


def number_range_regex(low: int | None, high: int | None) -> str:
    """Plain JSON numbers x (no exponent) with low <= x <= high, for integer bounds (None: open).

    Non-integer or exclusive bounds are rounded inward by the caller: the language is then a subset of the allowed
    values, so every output still validates. Non-negative x is `m` or `m.fff` with m in [low, high - 1], or exactly
    `high` (`.000` allowed); negative x is `-m.fff` with -(m + 0.fff) inside the bounds, the same way round.
    """
    fraction, zeros = r"(?:\.[0-9]+)?", r"(?:\.0+)?"
    parts: list[str] = []
    if high is None or high >= 0:
        start = max(low or 0, 0)
        if high is None:
            parts.append(integer_range_regex(start, None) + fraction)
        else:
            if start <= high - 1:
                parts.append(integer_range_regex(start, high - 1) + fraction)
            parts.append(str(high) + zeros)
    if low is None or low < 0:
        # -(m + f) >= low  <=>  m + f <= -low;  -(m + f) <= min(high, 0)  <=>  m + f >= -min(high, 0)
        floor = max(-high, 0) if high is not None and high < 0 else 0
        if low is None:
            parts.append("-" + integer_range_regex(floor, None) + fraction)
        else:
            if floor <= -low - 1:
                parts.append("-" + integer_range_regex(floor, -low - 1) + fraction)
            parts.append(f"-{-low}" + zeros)
    if not parts:
        raise ValueError(f"no number lies in [{low}, {high}]")
    return "(?:" + "|".join(parts) + ")"
