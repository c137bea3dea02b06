"""Typed user-facing errors and their one mapping to TGI's `{"error", "error_type"}` body and HTTP status."""
from __future__ import annotations

from starlette.responses import JSONResponse


class RouterError(Exception):
    """An error a client caused or must see; never a traceback."""

    status: int = 500
    error_type: str = "generation"

    def __init__(self, message: str, status: int | None = None, error_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.error_type = error_type or self.error_type

    def body(self) -> dict:
        return {"error": self.message, "error_type": self.error_type}

    def response(self, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class ValidationError(RouterError):
    status, error_type = 422, "validation"

    def __init__(self, message: str):
        super().__init__(f"Input validation error: {message}")


class OverloadedError(RouterError):
    status, error_type = 429, "overloaded"

    def __init__(self):
        super().__init__("Model is overloaded")


class GenerationError(RouterError):
    status, error_type = 424, "generation"

    def __init__(self, message: str):
        super().__init__(f"Request failed during generation: {message}")


class UnauthorizedError(RouterError):
    status, error_type = 401, "authentication"

    def __init__(self):
        super().__init__("Unauthorized")

    def response(self, headers: dict | None = None) -> JSONResponse:
        return super().response({"WWW-Authenticate": "Bearer", **(headers or {})})
