"""The uvicorn server rho-serve runs: its config, and an HTTP protocol with the limits uvicorn lacks.

uvicorn has a keep-alive timeout but no deadline for a request's headers or body, and no cap on open connections,
so a slowloris client (headers trickled), a body shorter than its Content-Length, or many idle sockets hold file
descriptors until the process runs out and `/health` stops answering. `GuardedHttpToolsProtocol` adds:
- a header deadline from the first byte of a connection (or of its next request): then 408 and close;
- a body deadline from the end of the headers: then the connection closes (the route sees a disconnect);
- a connection cap: a new connection over the cap evicts the longest-idle connection (one between requests, or that
  never sent a byte); when none is idle the new one is closed. A health probe always finds room while idle sockets
  are the problem.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
KEEP_ALIVE_S = 30


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_connections: int = 0  # 0: from the fd limit (see default_max_connections)


def default_max_connections() -> int:
    """Stay well under the open-file limit: the engine, logs and the tokenizer need descriptors too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, soft - 64 if soft > 128 else soft // 2))


def guarded_protocol(limits: ConnectionLimits):
    """The protocol class for uvicorn.Config(http=...), with these limits bound."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    max_connections = limits.max_connections or default_max_connections()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = None
            self._busy = False  # a request is being read or answered
            self._idle_since = self.loop.time()
            self._arm(limits.header_timeout_s, self._headers_late)
            if sum(not c.transport.is_closing() for c in self.connections) > max_connections:
                self._make_room()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._busy = True
            if self._deadline is None:  # the next request on a kept-alive connection
                self._arm(limits.header_timeout_s, self._headers_late)

        def on_headers_complete(self) -> None:
            self._arm(limits.body_timeout_s, self._body_late)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._busy = False
            self._idle_since = self.loop.time()
            super().on_response_complete()

        def _arm(self, seconds: float, callback) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, callback)

        def _disarm(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

        def _body_late(self) -> None:
            self._deadline = None
            self.transport.close()  # the route's receive() gets http.disconnect; it answers nobody

        def _is_idle(self) -> bool:
            return not getattr(self, "_busy", True) and (self.cycle is None or self.cycle.response_complete)

        def _make_room(self) -> None:
            # A closed transport stays in `connections` until its connection_lost runs: skip those.
            idle = sorted((c for c in self.connections
                           if c is not self and not c.transport.is_closing() and c._is_idle()),
                          key=lambda c: c._idle_since)
            if idle:
                idle[0].transport.close()
            else:
                self.transport.close()  # every other connection is mid-request: refuse this one

    return GuardedHttpToolsProtocol


def draining_server(config):
    """uvicorn.Server whose exit signal also starts router.shutdown's deadline (graceful termination)."""
    import asyncio

    import uvicorn

    from router.shutdown import DRAIN

    class DrainingServer(uvicorn.Server):
        async def serve(self, sockets=None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            timeout = self.config.timeout_graceful_shutdown
            loop = getattr(self, "_loop", None)
            if timeout is not None and loop is not None:
                loop.call_soon_threadsafe(DRAIN.begin, float(timeout))

    return DrainingServer(config)


def uvicorn_config(app, host: str, port: int, graceful_termination_timeout: float = 0.0,
                   limits: ConnectionLimits | None = None, **overrides):
    """One place for how rho-serve runs uvicorn (the CLI and the tests that need the real limits)."""
    import uvicorn

    options = dict(host=host, port=port, log_config=None, access_log=False,
                   timeout_graceful_shutdown=int(graceful_termination_timeout), timeout_keep_alive=KEEP_ALIVE_S,
                   http=guarded_protocol(limits or ConnectionLimits()))
    options.update(overrides)
    return uvicorn.Config(app, **options)
