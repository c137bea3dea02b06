"""Evaluation fixtures: the shared harness directory, the antlr 4.11 runtime for exact grading, a live rho-serve."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_server import LiveServer  # noqa: F401 (re-exported to the evaluation tests)

HARNESS_DIR = Path(__file__).resolve().parents[3] / "shared" / "rho-eval"  # ../shared from the repo root


@pytest.fixture(scope="session")
def harness_dir() -> Path:
    assert (HARNESS_DIR / "data" / "gsm8k" / "test.jsonl").is_file(), f"harness directory missing: {HARNESS_DIR}"
    return HARNESS_DIR


@pytest.fixture(scope="session")
def exact_latex():
    """Installs (once, with pip, into ~/.cache/rho-eval) the antlr 4.11 runtime the harness's grader used."""
    from evaluation.latex_antlr import install_antlr

    install_antlr()
    yield


API_KEY = "eval-test-key"


@pytest.fixture(scope="session")
def rho_serve(tiny_llama_dir):
    """The real engine on the tiny random Llama behind the real router app (API key required)."""
    import torch

    from router.app import create_app
    from router.config import RouterConfig
    from server import EngineConfig, load_engine_client

    torch.set_num_threads(1)
    client = load_engine_client(EngineConfig(model_id=str(tiny_llama_dir), num_threads=1))
    try:
        with LiveServer(create_app(client, RouterConfig(api_key=API_KEY))) as live:
            yield live
    finally:
        client.shutdown()
