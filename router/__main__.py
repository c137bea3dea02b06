"""`rho-serve`: parse TGI-style flags, log the resolved configuration, load the engine, serve with uvicorn.

SIGTERM/SIGINT: uvicorn stops accepting connections and waits up to --graceful-termination-timeout for in-flight
requests (streams included); just before that deadline each stream still running ends with an error event and each
non-streaming request with a 503 body (router.shutdown); then the engine thread is shut down.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import time

from router.cli import CliError, parse_args

log = logging.getLogger("rho_serve")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                           "level": record.levelname, "target": record.name, "message": record.getMessage()})


def setup_logging(json_output: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_output else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def serve(engine_config, router_config) -> None:
    from router.app import create_app
    from router.serving import draining_server, uvicorn_config
    from server import load_engine_client

    client = load_engine_client(engine_config)
    app = create_app(client, router_config)
    server = draining_server(uvicorn_config(app, router_config.hostname, router_config.port,
                                            router_config.graceful_termination_timeout))
    log.info("serving %s on http://%s:%d", client.checkpoint.model_id, router_config.hostname, router_config.port)
    # uvicorn drains on SIGTERM, then re-raises it to the handler in place before it started: make that one a
    # no-op so the engine is shut down below and the process exits 0 (a clean stop for Docker/Kubernetes).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        client.shutdown()
        log.info("shut down")


def main(argv: list[str] | None = None) -> int:
    try:
        engine_config, router_config = parse_args(argv)
    except CliError as e:
        print(f"rho-serve: error: {e}", file=sys.stderr)
        return 2
    setup_logging(router_config.json_output)
    log.info("engine config: %s", json.dumps(engine_config.to_dict(), default=str))
    log.info("router config: %s", json.dumps(router_config.to_dict(), default=str))
    try:
        serve(engine_config, router_config)
    except (CliError, ValueError, OSError) as e:  # checkpoint errors, limits vs capacity, port in use
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
