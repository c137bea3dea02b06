"""Bearer-token auth for the generation routes: `Authorization: Bearer <key>`, compared in constant time."""
from __future__ import annotations

import hmac

from fastapi import Request

from router.errors import UnauthorizedError


def is_authorized(header: str | None, api_key: str) -> bool:
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


def make_auth_dependency(api_key: str | None):
    """A FastAPI dependency: no-op without a key, else 401 (JSON body + WWW-Authenticate) on a missing/wrong token."""
    async def require_auth(request: Request) -> None:
        if api_key is not None and not is_authorized(request.headers.get("authorization"), api_key):
            raise UnauthorizedError()

    return require_auth
