"""integer_range_regex against brute force: exactly the integers in range, written canonically."""
import re

import pytest

from grammars.integer_range import integer_range_regex

CASES = [(0, 0), (0, 9), (1, 99), (7, 1234), (65, 65), (-5, 5), (-120, -3), (0, None), (17, None), (None, 0),
         (None, -42), (-3, None), (None, 250), (999, 1000), (10, 10099)]


@pytest.mark.parametrize("low, high", CASES)
def test_matches_exactly_the_range(low, high):
    pattern = re.compile(integer_range_regex(low, high))
    lo = -20000 if low is None else low - 50
    hi = 20000 if high is None else high + 50
    for n in range(lo, hi + 1):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(pattern.fullmatch(str(n))) == inside, (low, high, n)
    for bad in ("007", "-0", "00", "+1", "1.0", ""):
        assert not pattern.fullmatch(bad), bad


def test_empty_range_is_an_error():
    with pytest.raises(ValueError):
        integer_range_regex(5, 4)


@pytest.mark.parametrize("low, high", [(0, 1), (0, 100), (-1, 1), (-10, -2), (3, None), (None, 5), (None, -7),
                                       (-3, None), (0, 0)])
def test_number_range_regex_accepts_only_numbers_in_range(low, high):
    from fractions import Fraction

    from grammars.integer_range import number_range_regex

    pattern = re.compile(number_range_regex(low, high))
    samples = [f"{sign}{m}{frac}" for sign in ("", "-") for m in range(0, 130) for frac in ("", ".0", ".5", ".999", ".00")]
    accepted = 0
    for text in samples:
        value = Fraction(text)
        inside = (low is None or value >= low) and (high is None or value <= high)
        if pattern.fullmatch(text):
            assert inside, (low, high, text)
            accepted += 1
        elif inside and text == str(int(value)) and text != "-0":
            pytest.fail(f"the integer {text} lies in [{low}, {high}] but is refused")
    assert accepted
