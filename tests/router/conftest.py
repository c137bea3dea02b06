"""Router test fixtures: the real engine on the tiny Llama checkpoint behind a real uvicorn server on loopback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.live_server import LiveServer, free_port  # noqa: F401 (re-exported)

SHARED = Path(__file__).resolve().parents[3] / "shared"  # ../shared from the repo root
API_KEY = "test-secret-key"


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


@pytest.fixture(scope="module")
def client(server):
    """The OpenAI SDK pointed at the main server."""
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


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
