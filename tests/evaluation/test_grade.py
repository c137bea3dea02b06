"""math_equal against the harness's grading rules (HARNESS.md §7) and sandboxed grading."""
import pytest

from evaluation.grade import math_equal, quick_equal
from evaluation.scoring import grade_pairs, metrics


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("0.5", "50", True),  # percentage tolerance: gt/100
        ("5000", "50", True),  # gt*100
        ("3.0001", "3", True),  # rel_tol 1e-4
        ("3.001", "3", False),
        ("1,000", "1000", True),
        ("50\\%", "0.5", True),
        ("", "3", False),
        (None, "3", False),
        ("50dollars", "50", False),  # the unit-list quirk is graded wrong, as in the harness
        ("\\frac{1}{2}", "0.5", True),  # symbolic -> numeric value
        ("(1,\\frac{9}{2})", "(1,4.5)", True),  # tuples element-wise
        ("[1,2)", "(1,2)", True),  # quirk: interval ends are not compared, only the parts
        ("(1,3)", "(1,2)", False),
        ("x+1", "1+x", True),
        ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", True),
        ("y=2x+1", "2x-y+1=0", True),  # equations: lhs - rhs up to sign
        ("x=3", "3", True),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2.0\\end{pmatrix}", True),
        ("\\sqrt{2}", "1.4142", True),
        ("\\sqrt{2}", "1.41", False),
        ("A", "B", False),
    ],
)
def test_math_equal(pred, gt, expected, exact_latex):
    assert math_equal(pred, gt) is expected


def test_quick_equal_decides_numbers_only():
    assert quick_equal("12", "12.0") is True
    assert quick_equal("13", "12") is False
    assert quick_equal("\\frac{1}{2}", "0.5") is None


def test_grade_pairs_and_metrics():
    scores, num_timeouts = grade_pairs([("1", "1"), ("\\frac{1}{2}", "0.5"), ("2", "3")], num_workers=1)
    assert scores == [True, True, False] and num_timeouts == 0
    samples = [{"pred": ["1"], "score": [True]}, {"pred": [""], "score": [False]}, {"pred": ["2"], "score": [False]}]
    result = metrics(samples, 3, 0)
    assert result == {"num_samples": 3, "num_scores": 3, "timeout_samples": 0, "empty_samples": 1, "acc": 33.3}
