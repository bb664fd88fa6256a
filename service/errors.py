"""One error base carrying its HTTP status; the app renders all of them as
``{"error": "..."}``."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response


class ServingError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None
    """Extra response headers (``Retry-After``)."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


def render(error: ServingError) -> Response:
    """The one way an error becomes a response: ``{"error": "..."}`` with its status."""
    from service.protocols.codecs import to_json

    return Response(
        to_json(error.body()),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers,
    )


class InternalError(ServingError):
    """Never raised on purpose: what an unexpected exception is rendered as."""


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


class Unimplemented(ServingError):
    """A method of a protocol that foldserve does not serve, saying what to call instead."""

    status_code = 501


class DeadlineExceeded(ServingError):
    """A model run that took longer than its time budget and was stopped. 504, as a
    gateway answers for an upstream that did not answer in time (gRPC's
    DEADLINE_EXCEEDED is its counterpart)."""

    status_code = 504


class TooManyRequests(ServingError):
    """Too much work queued; try again after ``retry_after`` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class InsufficientStorage(ServingError):
    """Something could not be written: no space (or over a storage budget)."""

    status_code = 507

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.headers = {"Retry-After": str(retry_after)}
