"""The built-in clean math corpus: seeded generators of problems in the evaluation's `Question: ...\nAnswer: ...`
format, with step-by-step solutions that end "The answer is N." (GSM8K style).

Kinds: one- and two-step word problems, bare arithmetic, fractions, percentages, one-variable linear equations.
Every solution is computed, never sampled, so the clean corpus contains no wrong arithmetic. `max_number` bounds
the operands: small numbers give a task a few-million-parameter model can learn on a CPU budget.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Mark", "Leah", "Jason",
         "Shawn", "Olivia", "Michael", "Sara", "Tom", "Maria", "Ravi", "Chen", "Aisha", "Lucas", "Emma", "Noah"]
ITEMS = ["apples", "clips", "pencils", "pages", "marbles", "cookies", "books", "stickers", "eggs", "tickets",
         "toys", "cars", "shells", "cards", "candies", "flowers", "balloons", "coins", "chocolates", "lollipops"]
CONTAINERS = ["boxes", "bags", "packs", "baskets", "jars", "crates"]


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str  # step-by-step, ends with "The answer is N."
    answer: int

    def text(self) -> str:
        return f"Question: {self.question}\nAnswer: {self.solution}"


def _end(steps: str, answer: int) -> str:
    return f"{steps} The answer is {answer}."


def word_add(r: random.Random, m: int) -> Problem:
    n, it, a, b = r.choice(NAMES), r.choice(ITEMS), r.randint(1, m), r.randint(1, m)
    q = f"{n} has {a} {it}. {n} gets {b} more {it}. How many {it} does {n} have now?"
    return Problem(q, _end(f"{n} started with {a} {it}. {n} got {b} more. {a} + {b} = {a + b}.", a + b), a + b)


def word_sub(r: random.Random, m: int) -> Problem:
    n, it = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(2, m)
    b = r.randint(1, a - 1)
    q = f"{n} had {a} {it}. {n} gave {b} {it} to a friend. How many {it} does {n} have left?"
    return Problem(q, _end(f"{n} started with {a} {it}. {n} gave away {b}. {a} - {b} = {a - b}.", a - b), a - b)


def word_mul(r: random.Random, m: int) -> Problem:
    n, it, c = r.choice(NAMES), r.choice(ITEMS), r.choice(CONTAINERS)
    a, b = r.randint(2, max(2, m // 2)), r.randint(2, 10)
    q = f"{n} buys {a} {c} of {it}. Each of the {c} has {b} {it}. How many {it} does {n} buy?"
    return Problem(q, _end(f"There are {a} {c} with {b} {it} each. {a} * {b} = {a * b}.", a * b), a * b)


def word_two_step(r: random.Random, m: int) -> Problem:
    n, it = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(1, m), r.randint(1, m)
    c = r.randint(1, a + b)
    q = (f"{n} had {a} {it}. Then {n} found {b} more {it}. Later {n} lost {c} {it}. "
         f"How many {it} does {n} have at the end?")
    s = f"{n} started with {a} {it}. After finding {b} more, {n} had {a} + {b} = {a + b}. " \
        f"After losing {c}, {n} had {a + b} - {c} = {a + b - c}."
    return Problem(q, _end(s, a + b - c), a + b - c)


def word_money(r: random.Random, m: int) -> Problem:
    n, it = r.choice(NAMES), r.choice(ITEMS)
    k, p = r.randint(2, 5), r.randint(1, max(1, m // 4))
    total = k * p + r.randint(0, m)
    q = f"{n} has ${total}. {n} buys {k} {it} for ${p} each. How much money does {n} have left?"
    s = f"{n} had {total} dollars. {k} {it} for {p} dollars each cost {k} * {p} = {k * p} dollars. " \
        f"So {n} has {total} - {k * p} = {total - k * p} dollars left."
    return Problem(q, _end(s, total - k * p), total - k * p)


def arithmetic(r: random.Random, m: int) -> Problem:
    a, b = r.randint(1, m), r.randint(1, m)
    op = r.choice("+-*")
    if op == "-" and b > a:
        a, b = b, a
    c = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Problem(f"What is {a} {op} {b}?", _end(f"{a} {op} {b} = {c}.", c), c)


def fraction(r: random.Random, m: int) -> Problem:
    d = r.randint(2, 5)
    k = r.randint(1, d - 1)
    whole = d * r.randint(1, max(1, m // d))
    part = whole // d
    q = f"What is {k}/{d} of {whole}?"
    steps = f"{whole} / {d} = {part}." + ("" if k == 1 else f" {part} * {k} = {part * k}.")
    return Problem(q, _end(steps, part * k), part * k)


def percentage(r: random.Random, m: int) -> Problem:
    pct = r.choice([10, 20, 25, 50, 75])
    whole = r.choice([x for x in range(4, 4 * m + 1, 4) if x * pct % 100 == 0] or [100])
    c = whole * pct // 100
    s = f"{pct}% of {whole} is {whole} * {pct} / 100 = {c}."
    return Problem(f"What is {pct}% of {whole}?", _end(s, c), c)


def algebra(r: random.Random, m: int) -> Problem:
    a, x, b = r.randint(2, 5), r.randint(1, m), r.randint(1, m)
    q = f"Solve for x: {a}x + {b} = {a * x + b}."
    s = f"{a}x = {a * x + b} - {b} = {a * x}. x = {a * x} / {a} = {x}."
    return Problem(q, _end(s, x), x)


WORD_KINDS = (word_add, word_sub, word_mul, word_two_step, word_money)
ALL_KINDS = WORD_KINDS * 2 + (arithmetic, arithmetic, fraction, percentage, algebra)


def problem(r: random.Random, max_number: int, kinds: tuple = ALL_KINDS) -> Problem:
    return r.choice(kinds)(r, max_number)


def document(r: random.Random, max_number: int) -> str:
    """One clean document: 1-4 problems separated like the few-shot prompt (two blank lines)."""
    return "\n\n\n".join(problem(r, max_number).text() for _ in range(r.randint(1, 4)))


def heldout_problems(num: int, max_number: int, seed: int = 12345) -> list[Problem]:
    """Word problems for evaluation, from a seed no training corpus uses."""
    r = random.Random(seed)
    return [problem(r, max_number, WORD_KINDS) for _ in range(num)]
