"""The image's HEALTHCHECK: exit 0 when rho-serve answers GET /health with 200, else 1.

Plain standard library, because the slim image has no curl. It reads the same HOSTNAME and PORT the server binds to
(/health is never behind the API key, as in TGI).
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}


def health_url(env: dict[str, str]) -> str:
    host = env.get("HOSTNAME", "0.0.0.0")
    host = WILDCARD_HOSTS.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{host}:{env.get('PORT', '8080')}/health"


def main() -> int:
    url = health_url(dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed http URL on loopback)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as err:
        print(f"healthcheck: {url}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
