"""Where the tests find data they do not generate: the vendored copies under tests/data/ (tests/data/LICENSES.md),
and the evaluation harness directory.

RHO_EVAL_HARNESS_DIR: a math-evaluation-harness directory (data/, prompts/, and optionally outputs.zip, the released
models' graded outputs). Default: ../shared/rho-eval beside the checkout when present (the developers' and CI's
copy), else the vendored subset tests/data/rho-eval, which has no outputs.zip: the tests that need it skip and say
to set RHO_EVAL_HARNESS_DIR.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
OPENAPI_JSON = DATA / "tgi" / "openapi.json"  # TGI's OpenAPI document (Apache-2.0)
VENDORED_HARNESS = DATA / "rho-eval"
SHARED = ROOT.parent / "shared"
HARNESS_ENV = "RHO_EVAL_HARNESS_DIR"


def harness_dir() -> Path:
    """The harness directory the tests use (see the module docstring for the order)."""
    if os.environ.get(HARNESS_ENV):
        return Path(os.environ[HARNESS_ENV])
    shared = SHARED / "rho-eval"
    return shared if shared.is_dir() else VENDORED_HARNESS


def outputs_zip_missing_reason(directory: Path) -> str:
    return (f"{directory / 'outputs.zip'} does not exist: set {HARNESS_ENV} to a harness directory that has the "
            "released outputs.zip (e.g. ../shared/rho-eval)")
