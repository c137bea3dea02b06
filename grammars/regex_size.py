"""Refuse absurd regexes before building them: the size of a regex with its counted repetitions written out.

outlines-core unrolls `X{n,m}` into m copies of X's automaton, so `.{10000}`, `(a|b){1,50000}` or `.{1000000}`
build for minutes and take gigabytes (issue #15). `expanded_size` counts atoms (a character, a class, an escape)
with every counted repetition multiplied out, nested ones included (`(a{100}){100}` is 10,000). `*`, `+` and `?`
add nothing: they loop or skip, they do not copy. An alternation counts all its branches (they all get states).
The scan follows the regex syntax outlines-core accepts (Rust's); it never rejects a regex for its syntax: a
malformed one is measured as well as it can be and left to the builder's error.
"""
from __future__ import annotations

MAX_EXPANDED_SIZE = 200_000  # elements in all; any-JSON (depth 3) is ~2,900, 60 optional properties ~41,000
MAX_REPETITION = 4096  # copies of any one atom (nested counts multiply): `.{10000}` is 10,000


def expanded_size(regex: str) -> int:
    """Atoms in `regex` with counted repetitions expanded (an upper-bound estimate, cheap: one pass)."""
    return measure(regex)[0]


def measure(regex: str) -> tuple[int, int]:
    """(expanded size, largest number of copies of one atom) of `regex`."""
    # stack of [total of the group so far, size of its last item, copies of the last item's most repeated atom,
    # copies of the group's most repeated atom]; the last item is what a quantifier multiplies.
    stack: list[list[int]] = [[0, 0, 1, 1]]
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\":
            i = _skip_escape(regex, i)
            _add(stack, 1)
            continue
        if c == "[":
            i = _skip_class(regex, i)
            _add(stack, 1)
            continue
        if c == "(":
            stack.append([0, 0, 1, 1])
            i += 1
            if regex.startswith("?", i):  # (?:  (?i)  (?P<name>  (?<name>
                close = regex.find(")", i) if regex.startswith(("?i)", "?s)", "?m)", "?x)", "?u)"), i) else -1
                colon = regex.find(":", i) if regex.startswith(("?:", "?i:", "?s:", "?m:", "?x:"), i) else -1
                end_name = regex.find(">", i) if regex.startswith(("?P<", "?<"), i) else -1
                for stop in (colon, end_name):
                    if stop != -1:
                        i = stop + 1
                        break
                else:
                    if close != -1:  # a flag group `(?i)`: no content
                        stack.pop()
                        i = close + 1
            continue
        if c == ")":
            if len(stack) > 1:
                total, _, _, copies = stack.pop()
                _add(stack, total, copies)
            i += 1
            continue
        if c == "{":
            count, end = _count(regex, i)
            if count is not None:
                top = stack[-1]
                top[0] += top[1] * (count - 1)  # the last item now stands `count` times
                top[1] *= count
                top[2] *= count
                top[3] = max(top[3], top[2])
                i = end
                continue
        if c in "|":
            stack[-1][1], stack[-1][2] = 0, 1
            i += 1
            continue
        if c in "*+?^$":
            i += 1
            continue
        _add(stack, 1)
        i += 1
    while len(stack) > 1:  # unclosed groups: measure them anyway
        total, _, _, copies = stack.pop()
        _add(stack, total, copies)
    return stack[0][0], stack[0][3]


def _add(stack: list[list[int]], size: int, copies: int = 1) -> None:
    top = stack[-1]
    top[0] += size
    top[1] = size
    top[2] = copies
    top[3] = max(top[3], copies)


def _skip_escape(regex: str, i: int) -> int:
    """Index after the escape at i: `\\x`, `\\x{...}`, `\\p{...}`, `\\u{...}`."""
    j = i + 2
    if j < len(regex) and regex[i + 1] in "pPxu" and regex[j] == "{":
        close = regex.find("}", j)
        return close + 1 if close != -1 else len(regex)
    if i + 1 < len(regex) and regex[i + 1] == "x":
        return min(i + 4, len(regex))
    return j


def _skip_class(regex: str, i: int) -> int:
    """Index after the character class opening at i (Rust classes nest: `[a-z&&[^x]]`)."""
    depth, j = 0, i
    while j < len(regex):
        c = regex[j]
        if c == "\\":
            j = _skip_escape(regex, j)
            continue
        if c == "[":
            depth += 1
            j += 1
            for lead in ("^", "]"):  # `[]...]` and `[^]...]`: a leading `]` is a literal
                if j < len(regex) and regex[j] == lead:
                    j += 1
            continue
        if c == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(regex)


def _count(regex: str, i: int) -> tuple[int | None, int]:
    """The largest count of a `{n}`, `{n,}` or `{n,m}` at i (`{n,}` counts n + 1: n copies then a loop)."""
    close = regex.find("}", i)
    if close == -1:
        return None, i
    body = regex[i + 1:close].replace(" ", "")
    low, sep, high = body.partition(",")
    if not low.isdigit() or (high and not high.isdigit()):
        return None, i  # not a repetition: a literal `{`
    count = int(high) if high else int(low) + (1 if sep else 0)
    return max(count, 1), close + 1
