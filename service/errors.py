"""One error base carrying its HTTP status; the app renders all of them as
``{"error": "..."}``."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    status_code = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


class InvalidInput(ServingError):
    status_code = 400


class Unauthorized(ServingError):
    status_code = 401


class NotFound(ServingError):
    status_code = 404


class Conflict(ServingError):
    status_code = 409


class TooLarge(ServingError):
    status_code = 413


class Unprocessable(ServingError):
    status_code = 422


class NotReady(ServingError):
    status_code = 503
