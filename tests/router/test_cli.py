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
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from router.cli import CliError, options, parse_args
from router.config import RouterConfig
from server.config import EngineConfig, env_name, shown_default
from tests.router.conftest import free_port

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]


def test_flags_and_env(tmp_path):
    env = {"MODEL_ID": str(tmp_path), "PORT": "8080", "MAX_CONCURRENT_REQUESTS": "7", "API_KEY": "s3cr3t-v4lue",
           "WATERMARK_GAMMA": "0.25", "PREFIX_CACHING": "0", "SCORING_ROUTE": "/azure/score"}
    engine, router = parse_args(["--max-total-tokens", "512", "--port", "9000", "--cuda-graphs", "0",
                                 "--cors-allow-origin", "https://a.example,https://b.example"], env)
    assert engine.model_id == str(tmp_path) and engine.max_total_tokens == 512 and engine.cuda_graphs == ()
    assert not engine.enable_prefix_caching and engine.watermark_gamma == 0.25
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


# Every launcher flag, with a non-default value and what it sets; the names are TGI's and must not change.
SAMPLES = {
    "--model-id": ("/models/m", "/models/m"), "--dtype": ("float16", "float16"), "--device": ("cpu", "cpu"),
    "--block-size": ("32", 32), "--max-batch-total-tokens": ("8192", 8192),
    "--max-batch-prefill-tokens": ("2048", 2048), "--max-batch-size": ("8", 8), "--max-total-tokens": ("1024", 1024),
    "--disable-prefix-caching": (None, False), "--attention": ("triton", "triton"),
    "--cuda-memory-fraction": ("0.5", 0.5), "--cuda-graphs": ("1,2", (1, 2)), "--watermark-gamma": ("0.25", 0.25),
    "--watermark-delta": ("3.0", 3.0), "--num-threads": ("2", 2), "--hostname": ("127.0.0.1", "127.0.0.1"),
    "--port": ("8080", 8080), "--max-concurrent-requests": ("7", 7), "--max-best-of": ("3", 3),
    "--max-stop-sequences": ("6", 6), "--max-top-n-tokens": ("9", 9), "--max-input-tokens": ("100", 100),
    "--max-client-batch-size": ("5", 5), "--payload-limit": ("1000", 1000), "--api-key": ("k3y", "k3y"),
    "--cors-allow-origin": ("https://a.example, https://b.example", ("https://a.example", "https://b.example")),
    "--scoring-route": ("/azure/score", "/azure/score"), "--json-output": (None, True),
    "--graceful-termination-timeout": ("5", 5.0), "--keep-alive": ("2.5", 2.5),
    "--compute-type": ("gpu+optimized", "gpu+optimized"), "--disable-grammar-support": (None, True),
    "--grammar-compile-timeout": ("3", 3.0), "--wedge-timeout": ("30", 30.0), "--chat-template": ("TEMPLATE", None),
    "--speculate": ("3", 3), "--speculate-history": ("0", 0), "--kv-cache-dtype": ("bfloat16", "bfloat16"),
}


def _configs(engine, router):
    return {EngineConfig: engine, RouterConfig: router}


@pytest.mark.parametrize("flag", sorted(SAMPLES))
def test_every_field_is_reachable_by_flag_and_env(tmp_path, flag):
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    text, expected = SAMPLES[flag]
    text, expected = (str(template), str(template)) if text == "TEMPLATE" else (text, expected)
    base = [] if flag == "--model-id" else ["--model-id", str(tmp_path)]
    by_flag = _configs(*parse_args(base + [flag] + ([text] if text is not None else []), {}))
    by_env = _configs(*parse_args(base, {env_name(flag): text if text is not None else "1"}))
    for cls, f in options()[flag]:
        assert getattr(by_flag[cls], f.name) == expected == getattr(by_env[cls], f.name)
        assert expected != f.default


def test_flags_are_tgis_and_cover_every_field():
    assert set(options()) == set(SAMPLES)
    covered = {(cls, f.name) for targets in options().values() for cls, f in targets}
    assert covered == {(cls, f.name) for cls in (EngineConfig, RouterConfig) for f in fields(cls)}
    assert [t[1].name for t in options()["--max-total-tokens"]] == ["max_total_tokens"] * 2  # sets both configs


def test_help_explains_every_flag_with_its_default():
    out = subprocess.run([sys.executable, "-m", "router", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0

    def squeeze(text: str) -> str:  # argparse wraps lines (also at hyphens)
        return "".join(text.split())

    text = squeeze(out.stdout)
    for flag, targets in options().items():
        f = targets[0][1]
        explained = squeeze(f"{f.metadata['help']} [env {env_name(flag)}")
        assert flag in text and explained in text, flag
        assert text.split(explained, 1)[1].split("]", 1)[0].endswith(squeeze(f"default: {shown_default(f)}")), flag
    for legacy in ("--max-input-length", "--api-key-file"):
        assert legacy in text


def test_legacy_names_and_prefix_caching_env(tmp_path):
    base = ["--model-id", str(tmp_path)]
    _, router = parse_args(base + ["-g", "7"], {"MAX_INPUT_LENGTH": "50"})
    assert router.max_input_tokens == 50 and router.graceful_termination_timeout == 7.0
    assert parse_args(base + ["--max-input-length", "60"], {})[1].max_input_tokens == 60
    with pytest.raises(CliError, match="pass only one"):
        parse_args(base, {"MAX_INPUT_LENGTH": "50", "MAX_INPUT_TOKENS": "50"})
    assert not parse_args(base, {"PREFIX_CACHING": "0"})[0].enable_prefix_caching
    assert parse_args(base, {"PREFIX_CACHING": "1"})[0].enable_prefix_caching
    assert not parse_args(base, {"PREFIX_CACHING": "1", "DISABLE_PREFIX_CACHING": "true"})[0].enable_prefix_caching
    with pytest.raises(CliError, match="JSON_OUTPUT='maybe' is not a valid bool"):
        parse_args(base, {"JSON_OUTPUT": "maybe"})
    with pytest.raises(CliError, match="--cuda-graphs '1,x' is not a valid tuple: must be comma-separated"):
        parse_args(base + ["--cuda-graphs", "1,x"], {})


def test_defaults_are_the_dataclasses(tmp_path):
    engine, router = parse_args(["--model-id", str(tmp_path)], {})
    assert engine == EngineConfig(model_id=str(tmp_path)) and router == RouterConfig()


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
