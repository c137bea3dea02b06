"""sympy's ANTLR LaTeX parser, run on the antlr 4.11 runtime beside latex2sympy2's antlr 4.7.2.

The pinned harness grades with sympy's `parse_latex` (needs antlr4-python3-runtime 4.11) *and* latex2sympy
(ZubinGou's fork, also on 4.11). PyPI's latex2sympy2 pins antlr 4.7.2, so both cannot share one site-packages.
`rho-eval setup-latex` installs the 4.11 runtime into a private directory; `load_parse_latex` imports sympy's
generated parser against it (module objects keep their own references), then restores the 4.7.2 modules.
Without it `parse_latex` raises ImportError, which the grader treats as a failed parse (like any parser
error), and a handful of MATH items grade differently from the harness (see README).
"""
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ANTLR_VERSION = "4.11.1"
_PURGED_PREFIXES = ("antlr4", "sympy.parsing.latex._antlr", "sympy.parsing.latex._parse_latex_antlr")


def antlr_dir() -> Path:
    default = Path.home() / ".cache" / "rho-eval" / f"antlr4-{ANTLR_VERSION}"
    return Path(os.environ.get("RHO_EVAL_ANTLR_DIR", default))


def install_antlr(target: Path | None = None) -> Path:
    """pip-install the antlr 4.11 runtime (pure Python, no deps) into a private directory; idempotent."""
    target = target or antlr_dir()
    if not (target / "antlr4" / "__init__.py").is_file():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                   f"antlr4-python3-runtime=={ANTLR_VERSION}"]  # fmt: skip
        subprocess.run(command, check=True)
    return target


def _take_modules() -> dict[str, object]:
    taken = {name: module for name, module in sys.modules.items() if name.startswith(_PURGED_PREFIXES)}
    for name in taken:
        del sys.modules[name]
    return taken


def load_parse_latex(directory: Path | None = None) -> Callable[[str], object] | None:
    """sympy's parse_latex bound to antlr 4.11, or None when the runtime is not installed."""
    directory = directory or antlr_dir()
    if not (directory / "antlr4" / "__init__.py").is_file():
        return None
    saved = _take_modules()
    sys.path.insert(0, str(directory))
    try:
        antlr4 = importlib.import_module("antlr4")
        module = importlib.import_module("sympy.parsing.latex._parse_latex_antlr")
    finally:
        sys.path.remove(str(directory))
        own = _take_modules()
        sys.modules.update(saved)
    if module.LaTeXParser is None or module.MathErrorListener is None:
        return None
    return lambda text: _parse_swapped(own, antlr4, module, text)


def _parse_swapped(own: dict[str, object], antlr4, module, text: str) -> object:
    # The antlr runtime imports some of its modules inside functions: the 4.11 ones must be in sys.modules
    # while it runs. Grading workers are single-threaded, so swapping for the call is safe.
    saved = _take_modules()
    sys.modules.update(own)
    try:
        return _parse(antlr4, module, text)
    finally:
        _take_modules()
        sys.modules.update(saved)


def _parse(antlr4, module, text: str) -> object:
    # The body of sympy's parse_latex (strict=False): a prefix that parses is accepted, trailing text ignored.
    text = text.strip()
    listener = module.MathErrorListener(text)
    lexer = module.LaTeXLexer(antlr4.InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = module.LaTeXParser(antlr4.CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    return module.convert_relation(parser.math().relation())
