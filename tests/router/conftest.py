"""Router test fixtures: the real engine on the tiny Llama checkpoint behind a real uvicorn server on loopback."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.live_server import LiveServer, free_port  # noqa: F401 (re-exported)
from tests.shared_data import OPENAPI_JSON

API_KEY = "test-secret-key"


@pytest.fixture(scope="session")
def engine_client(make_client):
    client = make_client()
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
def http(server, auth_headers):
    """An httpx client on the main server, with the API key."""
    with httpx.Client(base_url=server.url, headers=auth_headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def auth_headers() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def openapi() -> dict:
    return json.loads(OPENAPI_JSON.read_text())


@pytest.fixture(scope="session")
def schemas():
    """schemas.validate(instance, "StreamResponse") against TGI's openapi.json (vendored in tests/data/tgi)."""
    from tests.router.openapi_schema import OpenApiSchemas

    return OpenApiSchemas(OPENAPI_JSON)
