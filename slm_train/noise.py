"""The built-in noisy "web-like" math corpus: clean documents with realistic token-level noise mixed in, each noisy
span labelled, so that what SLM selects can be measured per noise type.

A document is a list of (text, label) segments; `LABELS` names the label ids. Wrong numbers are the subtle kind the
paper cares about: an arithmetic result replaced by a nearby wrong value (so the text reads fluently).
"""
from __future__ import annotations

import random
import re
import string

from slm_train.math_corpus import problem

LABELS = ("clean", "boilerplate", "markup", "wrong_number", "random")
CLEAN, BOILERPLATE, MARKUP, WRONG, RANDOM = range(5)

BOILERPLATE_LINES = [
    "Home | About | Contact | Login | Sign up", "Share this: Facebook Twitter Email Print",
    "Copyright 2023 MathHelp Forum. All rights reserved.", "Posted by admin on March 3, 2021 | 4 comments",
    "Previous post: Homework help | Next post: Worksheets", "Subscribe to our newsletter for daily practice!",
    "Click here to download the PDF worksheet", "Related posts: Grade 3 math, Word problems, Fractions",
    "You are here: Home > Math > Word problems", "Cookies help us deliver our services. Accept",
    "Advertisement", "Reply Quote Report", "Tags: math, homework, grade 4, arithmetic",
]
MARKUP_SNIPPETS = ["<div class=\"post-body\">", "</div>", "<p>", "</p>", "<br/>", "&nbsp;", "<span style=\"color:#333\">",
          "</span>", "<li>", "</li>", "&amp;", "<td align=center>", "[/quote]", "{{cite web}}", "\\begin{tabular}"]
RESULT = re.compile(r"(?<== )\d+|(?<=The answer is )\d+")


def _random_string(r: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "#%&*/=_"
    return " ".join("".join(r.choice(alphabet) for _ in range(r.randint(3, 12))) for _ in range(r.randint(1, 4)))


def _wrong(value: int, r: random.Random) -> str:
    delta = r.choice([-10, -2, -1, 1, 2, 3, 10])
    return str(max(0, value + delta) if value + delta != value else value + 1)


def corrupt_numbers(text: str, r: random.Random, p: float) -> list[tuple[str, int]]:
    """Replace each arithmetic result by a wrong nearby number with probability p (labelled WRONG)."""
    segments, last = [], 0
    for m in RESULT.finditer(text):
        if r.random() < p:
            segments += [(text[last:m.start()], CLEAN), (_wrong(int(m.group()), r), WRONG)]
            last = m.end()
    return segments + [(text[last:], CLEAN)]


def noisy_document(r: random.Random, max_number: int, level: float = 1.0) -> list[tuple[str, int]]:
    """A web page of 1-4 problems wrapped in navigation, markup and junk (about 35% noise tokens at level 1)."""
    segs: list[tuple[str, int]] = []
    if r.random() < 0.8 * level:
        segs.append(("\n".join(r.sample(BOILERPLATE_LINES, r.randint(1, 3))) + "\n", BOILERPLATE))
    for i in range(r.randint(1, 4)):
        if i:
            segs.append(("\n\n\n", CLEAN))
        if r.random() < 0.4 * level:
            segs.append((r.choice(MARKUP_SNIPPETS), MARKUP))
        segs += corrupt_numbers(problem(r, max_number).text(), r, 0.35 * level)
        if r.random() < 0.3 * level:
            segs.append((" " + _random_string(r), RANDOM))
        if r.random() < 0.3 * level:
            segs.append(("\n" + r.choice(BOILERPLATE_LINES), BOILERPLATE))
    if r.random() < 0.6 * level:
        segs.append(("\n" + "\n".join(r.sample(BOILERPLATE_LINES, r.randint(1, 2))), BOILERPLATE))
    return [(t, label) for t, label in segs if t]
