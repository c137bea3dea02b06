"""The `arith` noisy corpus: labelled documents of each kind a web crawl mixes with the useful text.

A document is a list of (text, label) segments; `LABELS` names the label ids (PAD marks row padding, never a
document). Kinds and their target token shares (`MIX`): clean problems, exact duplicates of a small pool of
problems, templated boilerplate with variable dates/users/counts, fluent off-domain text with numbers, random ids,
markup. In a fraction of the problems one step is wrong (+-1/+-2, +-10, wrong operation, digit swap); the error is
propagated to the later steps and the answer, and only the digits that differ from the true text are labelled
`wrong` (so 42 -> 43 labels the "3", not the "4"). The digits of correct results are labelled `result`.
"""
from __future__ import annotations

import random
import string

from slm_train.arith import Problem, operands, training_problems, values

LABELS = ("clean", "result", "wrong", "duplicate", "boilerplate", "offdomain", "random", "markup")
CLEAN, RESULT, WRONG, DUPLICATE, BOILERPLATE, OFFDOMAIN, RANDOM, MARKUP = range(8)
PAD = 255  # label of the padding after the last document of a row: no loss, never selected, never evaluated
MIX = {"problem": 0.53, "duplicate": 0.15, "boilerplate": 0.14, "offdomain": 0.11, "random": 0.05, "markup": 0.02}
WRONG_STEP_SHARE = 0.3  # share of the (non-duplicate) problems with one wrong step
DUPLICATE_POOL = 200  # distinct problems the duplicates are copies of
Segments = list[tuple[str, int]]


def _corruptions(steps, i: int, truth: int, r: random.Random) -> tuple[dict, dict]:
    """One wrong version of step i: (wrong results, overridden operations)."""
    kind = r.choice(("small", "ten", "op", "swap"))
    if kind == "small":
        return {i: truth + r.choice((-2, -1, 1, 2))}, {}
    if kind == "ten":
        return {i: truth + r.choice((-10, 10))}, {}
    if kind == "op":
        return {}, {i: r.choice([o for o in "+-*" if o != steps[i][1]])}
    return {i: int(str(truth)[::-1])}, {}


def wrong_steps(p: Problem, r: random.Random, tries: int = 10) -> list[int] | None:
    """Results of the problem's steps with one step wrong and the error propagated; None if none fits."""
    truth = values(p.steps)
    for _ in range(tries):
        i = r.randrange(len(p.steps))
        wrong, ops = _corruptions(p.steps, i, truth[i], r)
        results = values(p.steps, wrong, ops)
        if results[i] != truth[i] and min(results) >= 0 and max(results) < 1000:
            return results
    return None


def labelled_solution(p: Problem, results: list[int]) -> Segments:
    """The solution text for these step results, each character labelled against the true solution."""
    truth = values(p.steps)
    segs: Segments = []
    for i, (_, op, _) in enumerate(p.steps):
        x, y = operands(p.steps, results, i)
        tx, ty = operands(p.steps, truth, i)
        segs += [(" ", CLEAN)] + _number(x, tx, CLEAN) + [(f" {op} ", CLEAN)] + _number(y, ty, CLEAN)
        segs += [(" = ", CLEAN)] + _number(results[i], truth[i], RESULT) + [(".", CLEAN)]
    return segs + [(" The answer is ", CLEAN)] + _number(results[-1], truth[-1], RESULT) + [(".", CLEAN)]


def _number(value: int, true_value: int, label: int) -> Segments:
    """Digits of value, right-aligned against the true value's: a digit that differs (or has no counterpart) is
    WRONG, the others keep `label`."""
    s, t = str(value), str(true_value).rjust(len(str(value)), " ")[-len(str(value)):]
    return [(c, label if c == tc else WRONG) for c, tc in zip(s, t)]


def problem_document(p: Problem, r: random.Random, wrong_share: float) -> Segments:
    results = wrong_steps(p, r) if r.random() < wrong_share else None
    segs: Segments = [(f"Question: {p.question}\nAnswer:", CLEAN)]
    return segs + labelled_solution(p, results or values(p.steps))


def clean_document(p: Problem) -> Segments:
    return problem_document(p, random.Random(0), 0.0)


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
USERS = ["admin", "mathfan", "jdoe", "teacher_k", "sam99", "moderator", "guest", "lily_b", "webmaster", "prof_x"]
CITIES = ["Lisbon", "Denver", "Osaka", "Leeds", "Cairo", "Lima", "Oslo", "Pune", "Perth", "Quebec", "Graz"]
BOILERPLATE_LINES = [
    "Posted by {user} on {month} {day}, {year} | {n} comments", "Page {n} of {m}", "{n} users online now",
    "Last edited by {user} on {month} {day}, {year}", "Copyright {year} MathHelp Forum. All rights reserved.",
    "Reply #{n} from {user}: Quote | Report", "Viewed {n} times. Joined {month} {year}. Posts: {m}",
    "Home > Forum > Homework > Page {n}", "Subscribe to get {n} new worksheets every week!",
    "Showing results {n} to {m}. Sort by: newest", "Tags: math, grade {n}, homework",
]
OFFDOMAIN_SENTENCES = [
    "The train to {city} leaves at {h}:{mm} from platform {n}.", "{city} had {m} mm of rain in {month}.",
    "The museum in {city} opened in {year} and has {m} rooms.", "Our bakery sells bread for {n} euros a loaf.",
    "The match ended {n} to {k} after {m} minutes of play.", "The hotel has {m} rooms on {n} floors.",
    "In {month} the temperature in {city} reached {m} degrees.", "The bridge is {m} meters long and {n} meters wide.",
    "The recipe needs {n} cups of flour, {k} eggs and a pinch of salt.", "The flight from {city} takes {n} hours.",
    "About {m} people live in the old town of {city}.", "The library is open from {n} am to {h} pm on weekdays.",
]
MARKUP_SNIPPETS = ["<div class=\"post-body\">", "</div>", "<p>", "</p>", "<br/>", "&nbsp;", "<span style=\"color:#333\">",
          "</span>", "<li>", "</li>", "&amp;", "<td align=center>", "[/quote]", "{{cite web}}", "<ul class=\"nav\">"]


def _fill(template: str, r: random.Random) -> str:
    return template.format(user=r.choice(USERS), month=r.choice(MONTHS), day=r.randint(1, 28),
                           year=r.randint(1990, 2024), n=r.randint(1, 60), m=r.randint(10, 999), k=r.randint(0, 9),
                           city=r.choice(CITIES), h=r.randint(1, 12), mm=f"{r.randint(0, 59):02d}")


def _random_id(r: random.Random) -> str:
    hexa = lambda k: "".join(r.choice("0123456789abcdef") for _ in range(k))  # noqa: E731
    alnum = string.ascii_letters + string.digits
    return r.choice([f"id: {hexa(8)}-{hexa(4)}-{hexa(4)}", f"session={''.join(r.choice(alnum) for _ in range(16))}",
                     f"order #{r.choice(string.ascii_uppercase)}{r.randint(1000, 99999)}", f"sha {hexa(12)}"])


def noise_document(kind: str, r: random.Random) -> Segments:
    if kind == "boilerplate":
        return [("\n".join(_fill(r.choice(BOILERPLATE_LINES), r) for _ in range(r.randint(2, 5))), BOILERPLATE)]
    if kind == "offdomain":
        return [(" ".join(_fill(r.choice(OFFDOMAIN_SENTENCES), r) for _ in range(r.randint(2, 5))), OFFDOMAIN)]
    if kind == "random":
        return [("\n".join(_random_id(r) for _ in range(r.randint(2, 4))), RANDOM)]
    return [("".join(r.choice(MARKUP_SNIPPETS) for _ in range(r.randint(3, 8))), MARKUP)]


def documents_of(kind: str, seed: int, wrong_share: float = WRONG_STEP_SHARE):
    """Endless documents of one kind of the noisy mix (or kind="clean": correct problems only)."""
    r = random.Random(seed)
    if kind in ("problem", "clean"):
        for p in training_problems(r):
            yield problem_document(p, r, wrong_share if kind == "problem" else 0.0)
    elif kind == "duplicate":
        pool_rng = random.Random(seed + 7)
        problems = training_problems(pool_rng)
        pool = [[(t, DUPLICATE) for t, _ in clean_document(next(problems))] for _ in range(DUPLICATE_POOL)]
        while True:
            yield r.choice(pool)
    else:
        while True:
            yield noise_document(kind, r)

