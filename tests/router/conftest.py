"""Router test fixtures: the real engine on the tiny Llama checkpoint behind a real uvicorn server on loopback."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"  # ../shared from the repo root
API_KEY = "test-secret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn on its own thread and event loop; the engine client binds to that loop on start-up."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
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


def make_client(checkpoint_dir, **engine_kwargs):
    import torch

    from server import EngineConfig, load_engine_client

    torch.set_num_threads(1)
    return load_engine_client(EngineConfig(model_id=str(checkpoint_dir), num_threads=1, **engine_kwargs))


@pytest.fixture(scope="session")
def engine_client(tiny_llama_dir):
    client = make_client(tiny_llama_dir)
    yield client
    client.shutdown()


@pytest.fixture(scope="session")
def server(engine_client):
    """The main server: API key required on generation routes; default TGI limits."""
    from router.app import create_app
    from router.config import RouterConfig

    with LiveServer(create_app(engine_client, RouterConfig(api_key=API_KEY))) as live:
        yield live


@pytest.fixture(scope="session")
def auth_headers() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def openapi() -> dict:
    return json.loads((SHARED / "tgi" / "openapi.json").read_text())


@pytest.fixture(scope="session")
def schemas():
    """schemas.validate(instance, "StreamResponse") against ../shared/tgi/openapi.json."""
    from tests.router.openapi_schema import OpenApiSchemas

    return OpenApiSchemas(SHARED / "tgi" / "openapi.json")
