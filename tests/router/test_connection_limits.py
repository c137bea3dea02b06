"""Timeouts and caps (issue #15): slowloris headers, short bodies, idle sockets and stalled SSE readers cannot hold
the server's connections or permits. A real uvicorn server with rho-serve's own protocol (router.serving)."""
from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.router.test_disconnect_watermark import wait_idle

pytestmark = pytest.mark.timeout(120)


def guarded_server(engine_client, limits, protocol_hook=None):
    import uvicorn

    from router.app import create_app
    from router.config import RouterConfig
    from router.serving import guarded_protocol, uvicorn_config
    from tests.live_server import LiveServer

    app = create_app(engine_client, RouterConfig())
    live = LiveServer(app)
    config = uvicorn_config(app, "127.0.0.1", live.port, 1, limits, log_level="warning")
    if protocol_hook is not None:
        base = guarded_protocol(limits)
        config.http = type("Hooked", (base,), {"connection_made": lambda self, t: (protocol_hook(t),
                                                                                   base.connection_made(self, t))})
    live.server = uvicorn.Server(config)
    return live


def read_until_closed(sock: socket.socket, limit_s: float = 15.0) -> bytes:
    """All bytes until the server closes; raises socket.timeout if it keeps the connection open."""
    sock.settimeout(limit_s)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.fixture
def limits():
    from router.serving import ConnectionLimits

    return ConnectionLimits(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=8)


def test_trickled_headers_get_408_and_a_close(engine_client, limits):
    with guarded_server(engine_client, limits) as live, socket.create_connection(("127.0.0.1", live.port)) as s:
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.3)
        got = b""
        for i in range(40):  # one header byte every 0.3 s: never a complete request
            try:
                s.sendall(b"X"[:1])
                got += s.recv(4096)
            except (socket.timeout, BrokenPipeError, ConnectionResetError):
                pass
            if got:
                break
        got += read_until_closed(s)
        assert got.startswith(b"HTTP/1.1 408")


def test_a_body_shorter_than_its_length_is_closed(engine_client, limits, caplog):
    with guarded_server(engine_client, limits) as live, socket.create_connection(("127.0.0.1", live.port)) as s:
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100\r\n\r\n{\"inputs\":")
        assert read_until_closed(s) == b""  # nobody to answer: the client never finished its request
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_idle_connections_over_the_cap_are_evicted_and_health_answers(engine_client, limits):
    from router.serving import ConnectionLimits

    patient = ConnectionLimits(header_timeout_s=60.0, body_timeout_s=60.0, max_connections=8)
    with guarded_server(engine_client, patient) as live:
        idle = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(20)]
        time.sleep(0.5)
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200
        closed = 0
        for s in idle:
            s.settimeout(0.2)
            try:
                closed += s.recv(1) == b""
            except socket.timeout:
                pass  # still open
            s.close()
        assert closed >= 20 + 1 - 8  # the oldest idle sockets made room; the server holds at most 8


@pytest.mark.parametrize("route,body", [
    ("/generate_stream", {"inputs": "stall", "parameters": {"max_new_tokens": 1900, "ignore_eos": True,
                                                            "top_n_tokens": 5, "details": True}}),
    ("/v1/completions", {"prompt": "stall", "max_tokens": 1900, "stream": True, "logprobs": 5}),
])
def test_a_reader_that_stops_reading_loses_its_permit_and_sequence(engine_client, limits, monkeypatch, route, body):
    import json

    import router.streaming

    monkeypatch.setattr(router.streaming, "SEND_TIMEOUT_S", 1.0)

    def small_buffers(transport):  # so a stalled reader stalls the server after a few events, not megabytes
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    with guarded_server(engine_client, limits, small_buffers) as live:
        infer = live.server.config.app.state.router.infer
        before = engine_client.stats()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", live.port))
        payload = json.dumps(body).encode()
        s.sendall(b"POST " + route.encode() + b" HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (infer.num_in_flight == 0 and engine_client.stats().num_running == 0
                                                   and engine_client.stats().num_decode_tokens_total
                                                   > before.num_decode_tokens_total):
            time.sleep(0.1)
        stats = wait_idle(engine_client)
        assert infer.num_in_flight == 0 and stats.num_running == 0
        assert stats.num_decode_tokens_total - before.num_decode_tokens_total < 1900  # aborted, not finished
        s.close()
