"""`rho-serve` flags and environment variables, TGI's start-up checks, and the real process: /score with and
without the token, JSON logs, and SIGTERM draining an in-flight request."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from router.cli import CliError, parse_args
from tests.router.conftest import free_port

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]


def test_flags_and_env(tmp_path):
    env = {"MODEL_ID": str(tmp_path), "PORT": "8080", "MAX_CONCURRENT_REQUESTS": "7", "API_KEY": "s3cr3t-v4lue",
           "WATERMARK_GAMMA": "0.25", "PREFIX_CACHING": "0", "SCORING_ROUTE": "/azure/score"}
    engine, router = parse_args(["--max-total-tokens", "512", "--port", "9000", "--cuda-graphs", "0",
                                 "--cors-allow-origin", "https://a.example,https://b.example"], env)
    assert engine.model_id == str(tmp_path) and engine.max_total_tokens == 512 and engine.cuda_graphs == ()
    assert not engine.enable_prefix_caching and engine.watermark_gamma == 0.25 == router.watermark_gamma
    assert router.port == 9000  # the flag wins over PORT
    assert router.max_concurrent_requests == 7 and router.api_key == "s3cr3t-v4lue"
    assert router.scoring_route == "/azure/score"
    assert router.cors_allow_origin == ("https://a.example", "https://b.example")
    assert "s3cr3t-v4lue" not in json.dumps(router.to_dict())  # the secret is never logged


def test_api_key_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("from-file\n")
    _, router = parse_args(["--model-id", str(tmp_path), "--api-key-file", str(key)], {})
    assert router.api_key == "from-file"
    _, router = parse_args(["--model-id", str(tmp_path)], {"API_KEY_FILE": str(key)})
    assert router.api_key == "from-file"
    with pytest.raises(CliError, match="does not exist"):
        parse_args(["--model-id", str(tmp_path), "--api-key-file", str(tmp_path / "nope")], {})


@pytest.mark.parametrize("argv,message", [
    (["--max-input-tokens", "100", "--max-total-tokens", "100"], "`max_input_tokens` must be < `max_total_tokens`"),
    (["--max-batch-prefill-tokens", "4096", "--max-batch-total-tokens", "1024"],
     "`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`"),
    (["--max-total-tokens", "4096", "--max-batch-total-tokens", "2048", "--max-batch-prefill-tokens", "512"],
     "`max_total_tokens` must be <= `max_batch_total_tokens`"),
    (["--max-input-tokens", "5", "--max-input-length", "5"], "pass only one"),
    (["--block-size", "12"], "`block_size` must be a positive power of two"),
    (["--scoring-route", "score"], "must start with '/'"),
])
def test_startup_checks(tmp_path, argv, message):
    with pytest.raises(CliError, match=message.replace("(", r"\(")):
        parse_args(["--model-id", str(tmp_path), *argv], {})


def test_bad_env_and_missing_model_are_clear(tmp_path):
    with pytest.raises(CliError, match="PORT='eighty' is not a valid int"):
        parse_args(["--model-id", str(tmp_path)], {"PORT": "eighty"})
    out = subprocess.run([sys.executable, "-m", "router", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "--max-concurrent-requests" in out.stdout and "MAX_TOTAL_TOKENS" in out.stdout


def _start(model_dir, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "API_KEY": "card-token", "PORT": str(port), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "router", "--model-id", str(model_dir), "--hostname", "127.0.0.1",
                             "--json-output", "--num-threads", "1", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("rho-serve did not become healthy")


def test_process_score_auth_and_sigterm_drain(tiny_llama_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tiny_llama_dir, port, "--graceful-termination-timeout", "60")
    try:
        _wait_ready(proc, url)
        card = {"inputs": "What is Deep Learning?"}
        ok = httpx.post(url + "/score", json=card, headers={"Authorization": "Bearer card-token"}, timeout=60)
        assert ok.status_code == 200 and isinstance(ok.json()[0]["generated_text"], str)
        denied = httpx.post(url + "/score", json=card, timeout=30)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        result: dict = {}

        def long_request() -> None:
            body = {"inputs": "Drain me", "parameters": {"max_new_tokens": 400, "details": True}}
            r = httpx.post(url + "/generate", json=body, headers={"Authorization": "Bearer card-token"}, timeout=120)
            result.update(status=r.status_code, body=r.json())

        worker = threading.Thread(target=long_request)
        worker.start()
        time.sleep(0.5)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=120)
        assert result.get("status") == 200, result  # drained, not cut
        assert result["body"]["details"]["generated_tokens"] == 400
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert any("router config" in entry["message"] for entry in logs)  # resolved config logged, as JSON
