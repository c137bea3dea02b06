"""rho-serve started as the image starts it: the Dockerfile's ENTRYPOINT + CMD with the default target's ENV, plus the
`docker run -e` settings an operator passes, on loopback. The model card's request goes to the scoring route with and
without the token; the probes, metrics, the image's HEALTHCHECK script and the SIGTERM drain are checked on the way.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.deploy.dockerfile_tools import REPO, command, container_env, load, stage
from tests.shared_data import OPENAPI_JSON

TOKEN = "card-token-5f1c"
CARD_BODY = {"inputs": "What is Deep Learning?"}  # the model card's request, verbatim
START_TIMEOUT_S = 120
DRAIN_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The default image's ENV on top of this machine's PATH, with the image's /opt/venv standing for our venv."""
    stages = load()
    env = container_env(stages, stage(stages), {"PATH": os.environ["PATH"]})
    env["PATH"] = env["PATH"].replace("/opt/venv", sys.prefix)
    return env | overrides


class Container:
    """The server process, its environment and its log."""

    def __init__(self, env: dict[str, str], log_path: Path):
        stages = load()
        argv = command(stages, stage(stages))
        executable = shutil.which(argv[0], path=env["PATH"])
        assert executable, f"{argv[0]} is not on the image's PATH here: install the package (pip install -e .)"
        self.env, self.log_path = env, log_path
        self.url = f"http://{env['HOSTNAME']}:{env['PORT']}"
        self.log = log_path.open("w")
        self.process = subprocess.Popen([executable, *argv[1:]], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def log_tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-4000:]

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"rho-serve exited with {self.process.returncode} at start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        pytest.fail(f"rho-serve not healthy after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DRAIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def container(tiny_llama_dir, tmp_path_factory):
    env = image_environment({  # what `docker run -e ...` would pass
        "MODEL_ID": str(tiny_llama_dir),
        "PORT": str(free_port()),
        "HOSTNAME": "127.0.0.1",
        "API_KEY": TOKEN,
        "MAX_TOTAL_TOKENS": "512",  # bounds the card's request (no max_new_tokens) on a random-weight model
        "GRACEFUL_TERMINATION_TIMEOUT": str(DRAIN_TIMEOUT_S),
        "OMP_NUM_THREADS": "1",  # a shared CI machine
    })
    server = Container(env, tmp_path_factory.mktemp("container") / "rho-serve.log")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def openapi_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of TGI's OpenAPI 3.0 schemas (`nullable` rewritten to JSON Schema's null type)."""
    def rewrite(node):
        if isinstance(node, dict):
            node = {k: rewrite(v) for k, v in node.items()}
            if node.pop("nullable", False):
                return {"anyOf": [{"type": "null"}, node]}
            return node
        return [rewrite(v) for v in node] if isinstance(node, list) else node

    components = rewrite(json.loads(OPENAPI_JSON.read_text())["components"])
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components})


def card_request(container: Container, route: str, authorization: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.post(f"{container.url}{route}", content=json.dumps(CARD_BODY), headers=headers, timeout=120)


def test_card_request_on_the_scoring_route_with_the_token(container):
    response = card_request(container, "/score", f"Bearer {TOKEN}")
    assert response.status_code == 200, response.text
    body = response.json()
    # TGI answers `inputs` bodies on / and /invocations with a one-item list (api-inference's shape); its OpenAPI
    # document says a bare GenerateResponse. Clients handle both; each item must be a GenerateResponse.
    items = body if isinstance(body, list) else [body]
    assert len(items) == 1, body
    openapi_validator("GenerateResponse").validate(items[0])
    assert items[0]["generated_text"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN],
                         ids=["no-header", "wrong-token", "wrong-scheme", "no-scheme"])
def test_card_request_on_the_scoring_route_without_the_token_is_401(container, authorization):
    response = card_request(container, "/score", authorization)
    assert response.status_code == 401, response.text
    assert "generated_text" not in response.text


def test_card_request_also_works_on_generate(container):
    response = card_request(container, "/generate", f"Bearer {TOKEN}")
    assert response.status_code == 200, response.text
    openapi_validator("GenerateResponse").validate(response.json())
    assert card_request(container, "/generate", None).status_code == 401


def test_probe_and_metrics_routes_need_no_token(container):
    for route in ("/health", "/ping"):
        assert httpx.get(f"{container.url}{route}", timeout=10).status_code == 200, route
    metrics = httpx.get(f"{container.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "tgi_queue_size" in metrics.text  # the HPA's custom metric


def run_healthcheck(container: Container) -> int:
    script = REPO / "docker" / "healthcheck.py"
    return subprocess.run([sys.executable, str(script)], env=container.env, capture_output=True, timeout=30,
                          check=False).returncode


def test_image_healthcheck_script_passes_on_a_running_server(container):
    assert run_healthcheck(container) == 0


def test_sigterm_drains_the_request_in_flight(container):
    """Runs last in this module: it stops the server. `docker stop` and Kubernetes send SIGTERM."""
    body = {"inputs": "What is Deep Learning?", "parameters": {"max_new_tokens": 400, "details": True}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    events, after_signal = [], 0
    try:
        with httpx.stream("POST", f"{container.url}/generate_stream", json=body, headers=headers, timeout=60) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line.removeprefix("data:")))
                if len(events) == 1:
                    container.process.send_signal(signal.SIGTERM)
                else:
                    after_signal += 1
    except httpx.TransportError as err:
        pytest.fail(f"SIGTERM cut the stream after {len(events)} events instead of draining it: {err!r}\n"
                    f"{container.log_tail()}")
    final = events[-1]
    assert final.get("generated_text") is not None, f"the stream was cut: {final}\n{container.log_tail()}"
    assert final["details"]["generated_tokens"] == len(events)
    assert final["details"]["finish_reason"] == "length" or final["token"]["special"]
    assert after_signal > 0
    # 0, or killed by the re-raised SIGTERM after a clean shutdown (uvicorn does this; Docker reports 143).
    assert container.process.wait(DRAIN_TIMEOUT_S) in (0, -signal.SIGTERM), container.log_tail()
    assert run_healthcheck(container) == 1  # the HEALTHCHECK sees it gone
