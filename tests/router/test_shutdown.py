"""SIGTERM with --graceful-termination-timeout (issue #15): at the deadline each stream still running ends with one
TGI error event and each non-streaming request gets a 503 body, then the process exits 0 (a real rho-serve)."""
from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.live_server import free_port
from tests.router.test_cli import _start, _wait_ready

pytestmark = pytest.mark.timeout(180)
AUTH = {"Authorization": "Bearer card-token"}
LONG = {"max_new_tokens": 1900, "ignore_eos": True, "do_sample": True}


def test_sigterm_deadline_ends_streams_with_an_error_event_and_requests_with_503(tiny_llama_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tiny_llama_dir, port, "--graceful-termination-timeout", "3")
    results: dict = {}

    def stream(i: int) -> None:
        body = {"inputs": f"Stream {i}", "parameters": LONG}
        with httpx.stream("POST", url + "/generate_stream", json=body, headers=AUTH, timeout=60) as r:
            results[f"s{i}"] = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]

    def generate(i: int) -> None:
        body = {"inputs": f"Request {i}", "parameters": LONG}
        r = httpx.post(url + "/generate", json=body, headers=AUTH, timeout=60)
        results[f"g{i}"] = (r.status_code, r.json())

    try:
        _wait_ready(proc, url)
        workers = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        workers += [threading.Thread(target=generate, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
        time.sleep(1.0)  # all in flight
        proc.send_signal(signal.SIGTERM)
        for w in workers:
            w.join(timeout=60)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    for i in range(4):
        events = results[f"s{i}"]
        assert len(events) > 1 and "error" not in events[0]
        assert events[-1] == {"error": "Server is shutting down; the request did not finish", "error_type": "shutdown"}
    for i in range(2):
        assert results[f"g{i}"] == (503, {"error": "Server is shutting down; the request did not finish",
                                          "error_type": "shutdown"})
    assert "Traceback" not in stderr and "without completing response" not in stderr, stderr[-3000:]
