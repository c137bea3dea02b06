"""Evaluation fixtures: the harness directory (RHO_EVAL_HARNESS_DIR, tests/shared_data.py), its outputs.zip, the
antlr 4.11 runtime for exact grading, a live rho-serve."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_server import LiveServer  # noqa: F401 (re-exported to the evaluation tests)
from tests.shared_data import HARNESS_ENV, harness_dir as find_harness_dir, outputs_zip_missing_reason


@pytest.fixture(scope="session")
def harness_dir() -> Path:
    """../shared/rho-eval, else the vendored subset; RHO_EVAL_HARNESS_DIR overrides both."""
    path = find_harness_dir()
    assert (path / "data" / "gsm8k" / "test.jsonl").is_file(), \
        f"{path} is not a math-evaluation-harness directory (no data/gsm8k/test.jsonl); check {HARNESS_ENV}"
    return path


@pytest.fixture(scope="session")
def outputs_zip(harness_dir) -> Path:
    """The released models' graded outputs; not vendored (2.4 MB): skips, naming RHO_EVAL_HARNESS_DIR, without it."""
    path = harness_dir / "outputs.zip"
    if not path.is_file():
        pytest.skip(outputs_zip_missing_reason(harness_dir))
    return path


@pytest.fixture(scope="session")
def exact_latex():
    """Installs (once, with pip, into ~/.cache/rho-eval) the antlr 4.11 runtime the harness's grader used."""
    from evaluation.latex_antlr import install_antlr

    install_antlr()
    yield


API_KEY = "eval-test-key"


@pytest.fixture(scope="session")
def rho_serve(make_client):
    """The real engine on the tiny random Llama behind the real router app (API key required)."""
    from router.app import create_app
    from router.config import RouterConfig

    client = make_client()
    try:
        with LiveServer(create_app(client, RouterConfig(api_key=API_KEY))) as live:
            yield live
    finally:
        client.shutdown()
