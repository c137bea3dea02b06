"""Math equality exactly as the harness's `grader.math_equal` (HARNESS.md §7).

Order: string equality, numeric equality with percentage tolerance (final when both sides are numbers), bracket
and matrix structure, equations, then sympy symbolic equality. `quick_equal` answers the cases that need no
sympy, so a grader can skip the process pool for them without changing any result.
"""
import functools
import math
import re

from sympy import N, simplify
from sympy.parsing.latex import parse_latex
from sympy.parsing.sympy_parser import parse_expr
from latex2sympy2 import latex2sympy

from evaluation.latex_antlr import load_parse_latex

_BRACKETED = re.compile(r"(\(|\[).+(\)|\])")
_MATRIX_OPEN = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_CLOSE = ("\\end{pmatrix}", "\\end{bmatrix}")


def parse_digits(value: object) -> float | None:
    text = str(value).replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("%"):
        text = text[:-1].removesuffix("\\")
        try:
            return float(text) / 100
        except ValueError:
            pass
    return None


def numeric_equal(prediction: float, reference: float) -> bool:
    return math.isclose(reference, prediction, rel_tol=1e-4)


def _numbers_equal(prediction: float, reference: float, include_percentage: bool) -> bool:
    candidates = [reference / 100, reference, reference * 100] if include_percentage else [reference]
    return any(numeric_equal(prediction, candidate) for candidate in candidates)


def quick_equal(prediction: object, reference: object, include_percentage: bool = True) -> bool | None:
    """True/False where the harness decides without sympy (steps 1-3); None where sympy may be needed."""
    if str(prediction) == str(reference):
        return True
    pred_number, ref_number = parse_digits(prediction), parse_digits(reference)
    if pred_number is not None and ref_number is not None:
        return _numbers_equal(pred_number, ref_number, include_percentage)
    if not prediction and prediction not in [0, False]:
        return False
    return None


def str_to_pmatrix(text: str) -> str:
    rows = re.findall(r"\{.*,.*\}", text.strip())
    return ", ".join(r"\begin{pmatrix}" + row.strip("{}").replace(",", "\\") + r"\end{pmatrix}" for row in rows)


def _brackets_equal(prediction: str, reference: str) -> bool:
    pred, ref = prediction, reference
    if (prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")) or (
        prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")
    ):
        pred, ref = pred.strip("[]()"), ref.strip("[]()")
    for bracket in "{}()":
        pred, ref = pred.replace(bracket, ""), ref.replace(bracket, "")
    return pred.lower() == ref.lower()


def _tuples_equal(prediction: str, reference: str, include_percentage: bool) -> bool:
    if not (_BRACKETED.match(prediction) and _BRACKETED.match(reference)):
        return False
    pred_parts, ref_parts = prediction[1:-1].split(","), reference[1:-1].split(",")
    return len(pred_parts) == len(ref_parts) and all(
        math_equal(p, r, include_percentage) for p, r in zip(pred_parts, ref_parts)
    )


def _is_matrix(text: str) -> bool:
    return text.startswith(_MATRIX_OPEN) and text.endswith(_MATRIX_CLOSE)


def _matrix_rows(text: str) -> list[list[str]]:
    # The harness cuts len("\begin{pmatrix}") / len("\end{pmatrix}") whatever the bracket kind (same lengths).
    body = text[len("\\begin{pmatrix}") : -len("\\end{pmatrix}")]
    return [line.strip().split("&") for line in body.split("\\\\") if line.strip()]


def _matrices_equal(prediction: str, reference: str, include_percentage: bool) -> bool:
    if not (_is_matrix(prediction) and _is_matrix(reference)):
        return False
    pred_rows, ref_rows = _matrix_rows(prediction), _matrix_rows(reference)
    if len(pred_rows) != len(ref_rows):
        return False
    for pred_row, ref_row in zip(pred_rows, ref_rows):
        if len(pred_row) != len(ref_row):
            return False
        if not all(math_equal(p, r, include_percentage) for p, r in zip(pred_row, ref_row)):
            return False
    return True


def _equations_equal(prediction: str, reference: str, include_percentage: bool) -> bool:
    if prediction.count("=") == 1 and reference.count("=") == 1:
        pred_lhs, pred_rhs = prediction.split("=")
        ref_lhs, ref_rhs = reference.split("=")
        pred = f"{pred_lhs.strip()} - ({pred_rhs.strip()})"
        ref = f"{ref_lhs.strip()} - ({ref_rhs.strip()})"
        return symbolic_equal(pred, ref) or symbolic_equal(f"-({pred})", ref)
    if prediction.count("=") == 1 and len(prediction.split("=")[0].strip()) <= 2 and "=" not in reference:
        return math_equal(prediction.split("=")[1], reference, include_percentage)
    if reference.count("=") == 1 and len(reference.split("=")[0].strip()) <= 2 and "=" not in prediction:
        return math_equal(prediction, reference.split("=")[1], include_percentage)
    return False


def math_equal(prediction: object, reference: object, include_percentage: bool = True) -> bool:
    quick = quick_equal(prediction, reference, include_percentage)
    if quick is not None:
        return quick
    reference, prediction = str(reference).strip(), str(prediction).strip()
    if "pmatrix" in prediction and "pmatrix" not in reference:
        reference = str_to_pmatrix(reference)
    return (
        _brackets_equal(prediction, reference)
        or _tuples_equal(prediction, reference, include_percentage)
        or _matrices_equal(prediction, reference, include_percentage)
        or _equations_equal(prediction, reference, include_percentage)
        or symbolic_equal(prediction, reference)
    )


@functools.cache
def _latex_parser():
    # sympy's own parse_latex raises ImportError under antlr 4.7.2; the harness ran it on antlr 4.11.
    return load_parse_latex() or parse_latex


def parse_symbolic(text: str) -> object:
    """First parser that succeeds (sympy LaTeX, sympy expression, latex2sympy), each on `\\\\`->`\\` then raw."""
    for parser in (_latex_parser(), parse_expr, latex2sympy):
        for candidate in (text.replace("\\\\", "\\"), text):
            try:
                return parser(candidate)
            except Exception:  # parsers raise anything from SyntaxError to TypeError on model output
                continue
    return text


def _try(check) -> bool:
    try:
        return bool(check())
    except Exception:  # sympy raises freely on mixed types (str vs Expr, Matrix vs scalar, ...)
        return False


def symbolic_equal(a_text: str, b_text: str) -> bool:
    a, b = parse_symbolic(a_text), parse_symbolic(b_text)
    checks = (
        lambda: str(a) == str(b) or a == b,
        lambda: a.equals(b) or simplify(a - b) == 0,
        lambda: abs(a.lhs - a.rhs).equals(abs(b.lhs - b.rhs)),
        lambda: numeric_equal(float(N(a)), float(N(b))),
        lambda: a.shape == b.shape
        and a.applyfunc(lambda x: round(x, 3)).equals(b.applyfunc(lambda x: round(x, 3))),
    )
    return any(_try(check) for check in checks)
