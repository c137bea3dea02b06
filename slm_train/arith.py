"""The `arith` task's clean generator: 2-3-step word problems with exact answers (operands 2-9, results < 100).

A problem is a question and a chain of steps; step i may use the previous step's result as one operand, so a wrong
result can be propagated (noise.py). The solution text is the evaluation format, e.g.
`Question: ...\nAnswer: 7 * 6 = 42. 44 - 42 = 2. The answer is 2.` Held-out problems come from a seed no corpus
uses, and every training generator skips their questions, so no held-out problem is in any training corpus.
"""
from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass

NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Mark", "Leah", "Jason",
         "Shawn", "Olivia", "Michael", "Sara", "Tom", "Maria", "Ravi", "Chen", "Aisha", "Lucas", "Emma", "Noah"]
ITEMS = ["apples", "clips", "pencils", "pages", "marbles", "cookies", "books", "stickers", "eggs", "tickets",
         "toys", "cars", "shells", "cards", "candies", "flowers", "balloons", "coins", "chocolates", "lollipops"]
CONTAINERS = ["boxes", "bags", "packs", "baskets", "jars", "crates"]
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
PREV = -1  # operand placeholder: the previous step's result
HELDOUT_SEED = 987_654  # no corpus uses it
HELDOUT_POOL = 2000  # held-out questions generated (and excluded from training) whatever num is asked


@dataclass(frozen=True)
class Problem:
    question: str
    steps: tuple[tuple[int, str, int], ...]  # (left, op, right); PREV stands for the previous result
    answer: int

    @property
    def solution(self) -> str:
        return render(self.steps, values(self.steps))

    def text(self) -> str:
        return f"Question: {self.question}\nAnswer:{self.solution}"

    def prompt(self) -> str:
        return f"Question: {self.question}\nAnswer:"


def operands(steps, results: list[int], i: int) -> tuple[int, int]:
    left, _, right = steps[i]
    prev = results[i - 1] if i else None
    return (prev if left == PREV else left), (prev if right == PREV else right)


def values(steps, wrong: dict[int, int] | None = None, op_override: dict[int, str] | None = None) -> list[int]:
    """Result of every step; `wrong[i]` replaces step i's result, later steps compute from it (propagation)."""
    results: list[int] = []
    for i, (_, op, _) in enumerate(steps):
        x, y = operands(steps, results, i)
        v = OPS[(op_override or {}).get(i, op)](x, y)
        results.append((wrong or {}).get(i, v))
    return results


def render(steps, results: list[int]) -> str:
    parts = []
    for i, (_, op, _) in enumerate(steps):
        x, y = operands(steps, results, i)
        parts.append(f" {x} {op} {y} = {results[i]}.")
    return "".join(parts) + f" The answer is {results[-1]}."


def _d(r: random.Random) -> int:
    return r.randint(2, 9)


def add_sub(r, n, it):
    a, b = _d(r), _d(r)
    c = r.randint(2, min(9, a + b))
    return f"{n} has {a} {it}. {n} buys {b} more. Then {n} gives {c} to a friend. How many {it} does {n} have " \
           f"now?", ((a, "+", b), (PREV, "-", c))


def mul_sub(r, n, it):
    a, b, box = _d(r), _d(r), r.choice(CONTAINERS)
    c = r.randint(2, min(9, a * b))
    return f"{n} buys {a} {box} with {b} {it} in each. {n} gives away {c} {it}. How many {it} are left?", \
        ((a, "*", b), (PREV, "-", c))


def mul_add(r, n, it):
    a, b, c, box = _d(r), _d(r), _d(r), r.choice(CONTAINERS)
    return f"{n} has {a} {box} of {b} {it} and {c} loose {it}. How many {it} does {n} have?", \
        ((a, "*", b), (PREV, "+", c))


def more_than(r, n, it):
    a, b, m = _d(r), _d(r), r.choice([x for x in NAMES if x != n])
    return f"{n} has {a} {it}. {m} has {b} more {it} than {n}. How many {it} do they have together?", \
        ((a, "+", b), (a, "+", PREV))


def sub_mul(r, n, it):
    a = r.randint(3, 9)
    b, c, box = r.randint(2, a - 1), _d(r), r.choice(CONTAINERS)
    return f"{n} had {a} {box} of {it} and gave {b} {box} away. Each of the {box} holds {c} {it}. How many " \
           f"{it} does {n} have left?", ((a, "-", b), (PREV, "*", c))


def mul_add_sub(r, n, it):
    a, b, c, box = _d(r), _d(r), _d(r), r.choice(CONTAINERS)
    d = r.randint(2, min(9, a * b + c))
    return f"{n} has {a} {box} of {b} {it} and finds {c} more {it}. Then {n} loses {d} {it}. How many {it} " \
           f"does {n} have now?", ((a, "*", b), (PREV, "+", c), (PREV, "-", d))


def money(r, n, it):
    b, c = _d(r), _d(r)
    a = r.randint(b * c, min(99, b * c + 30))
    return f"{n} has ${a}. {n} buys {b} {it} for ${c} each. How many dollars does {n} have left?", \
        ((b, "*", c), (a, "-", PREV))


def sums(r, n, it):
    a, b, c = _d(r), _d(r), _d(r)
    return f"{n} has {a} red {it}, {b} blue {it} and {c} green {it}. How many {it} does {n} have in all?", \
        ((a, "+", b), (PREV, "+", c))


KINDS = (add_sub, mul_sub, mul_add, more_than, sub_mul, mul_add_sub, money, sums)


def make_problem(r: random.Random) -> Problem:
    kind = r.choice(KINDS)
    question, steps = kind(r, r.choice(NAMES), r.choice(ITEMS))
    return Problem(question, steps, values(steps)[-1])


@functools.lru_cache(maxsize=1)
def _heldout_pool() -> tuple[Problem, ...]:
    r, seen, out = random.Random(HELDOUT_SEED), set(), []
    while len(out) < HELDOUT_POOL:
        p = make_problem(r)
        if p.question not in seen:
            seen.add(p.question)
            out.append(p)
    return tuple(out)


def heldout_questions() -> frozenset[str]:
    return frozenset(p.question for p in _heldout_pool())


def heldout_problems(num: int) -> list[Problem]:
    """The first num held-out problems (distinct questions, never generated for training)."""
    if num > HELDOUT_POOL:
        raise ValueError(f"at most {HELDOUT_POOL} held-out problems")
    return list(_heldout_pool()[:num])


def training_problems(r: random.Random):
    """Endless problems for training corpora: the held-out questions are skipped."""
    banned = heldout_questions()
    while True:
        p = make_problem(r)
        if p.question not in banned:
            yield p


def floors(problems: list[Problem]) -> dict[str, float]:
    """Accuracy of two answer-free strategies: the most frequent answer, and the last number in the question."""
    most = Counter(p.answer for p in problems).most_common(1)[0][1] / len(problems)
    import re

    last = sum(int(re.findall(r"\d+", p.question)[-1]) == p.answer for p in problems) / len(problems)
    return {"most_frequent_answer": most, "last_number_in_question": last}
