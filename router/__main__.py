"""`rho-serve`: parse TGI-style flags, log the resolved configuration, load the engine, serve with uvicorn.

SIGTERM/SIGINT: uvicorn stops accepting connections and waits up to --graceful-termination-timeout for in-flight
requests (streams included); just before that deadline each stream still running ends with an error event and each
non-streaming request with a 503 body (router.shutdown); then the engine loop (on the main thread) is stopped.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time

from router.cli import CliError, parse_args

log = logging.getLogger("rho_serve")
# The engine's thread and the HTTP thread pass the GIL back and forth every step; at Python's default 5 ms a thread
# that wants it can wait that long while the other runs Python. Measured (`rho-bench serve --mode generate`, 3 rounds,
# paired by round): 0.5 ms over 5 ms, bundled model median 3,490 vs 3,326 and 3,909 vs 3,128 tok/s (4 of 6 rounds
# faster), 7.5M 1.03-1.05x in all 3 rounds; 0.1 ms was slower than both. One request at a time it matters most
# (the HTTP thread needs the GIL a few times per request while the engine runs Python almost without pause):
# 1.47x -> 1.70-1.83x transformers on the bundled model, 1.26x -> 1.91x on the 7.5M one.
GIL_SWITCH_INTERVAL_S = 0.0005


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


def serve(engine_config, router_config) -> int:
    """Load the engine, then serve HTTP from a thread while the engine's loop runs on this (the main) thread (see
    server.engine.Engine.run for why); SIGTERM/SIGINT reach uvicorn's drain through handlers installed here. Returns
    the exit status (uvicorn's own when it could not start, e.g. the port is taken)."""
    from router.app import create_app
    from router.serving import draining_server, uvicorn_config
    from server import load_engine_client

    client = load_engine_client(engine_config)
    app = create_app(client, router_config)
    server = draining_server(uvicorn_config(app, router_config.hostname, router_config.port,
                                            router_config.graceful_termination_timeout))
    log.info("serving %s on http://%s:%d", client.checkpoint.model_id, router_config.hostname, router_config.port)
    status = {"code": 0}

    def run_http() -> None:
        try:
            server.run()  # off the main thread uvicorn installs no signal handlers: the ones below forward to it
        except SystemExit as e:  # uvicorn's start-up failures (it has logged why)
            status["code"] = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - logged, then the engine is stopped and the process exits non-zero
            log.exception("the HTTP server failed")
            status["code"] = 1
        finally:
            client.shutdown()  # ends client.run_engine() below

    # uvicorn drains on SIGTERM (a clean stop for Docker/Kubernetes: exit 0); a second SIGINT forces the exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.handle_exit)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    client.claim_engine_thread()  # before the HTTP thread starts: its lifespan must not start an engine thread
    http = threading.Thread(target=run_http, name="rho-http")
    http.start()
    try:
        client.run_engine()
    finally:
        if http.is_alive() and not server.should_exit:  # the engine loop itself died: stop serving
            log.error("the engine loop stopped; shutting the HTTP server down")
            server.should_exit = True
            status["code"] = status["code"] or 1
        http.join()
        log.info("shut down")
    return status["code"]


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
        return serve(engine_config, router_config)
    except (CliError, ValueError, OSError) as e:  # checkpoint errors, limits vs capacity
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
