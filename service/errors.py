"""One error base carrying its HTTP status; the app renders all of them as
``{"error": "..."}``. ``STATUSES`` is the one table of what each status means: its
canonical error code (gRPC's status code, TF Serving's ``error_code``) and how the
OpenAPI document describes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response


@dataclass(frozen=True)
class Status:
    code: str
    """The canonical error code (google.rpc.Code name): a gRPC call's status, and the
    ``error_code`` of TF Serving's model status."""
    meaning: str | None = None
    """What every route of the OpenAPI document says the status means; None: the
    status is not listed on every route."""


STATUSES: dict[int, Status] = {
    400: Status("INVALID_ARGUMENT", "invalid request: the message names the field and value"),
    401: Status("UNAUTHENTICATED", "a token is set on the server and this request lacks it"),
    404: Status("NOT_FOUND", "no such model, version, job or path"),
    408: Status(
        "DEADLINE_EXCEEDED",
        "the request line, headers or body did not arrive in time (connection closed)",
    ),
    409: Status(
        "FAILED_PRECONDITION",
        "the job has already finished, or this server cannot fold (no TensorFlow)",
    ),
    413: Status("RESOURCE_EXHAUSTED", "request body over the size limit"),
    # TF Serving has no 422: its REST server answers both INVALID_ARGUMENT and
    # FAILED_PRECONDITION with 400 (http_server.cc). A 422 here is a request that is
    # wrong whatever the server's state (a model that cannot be folded, inputs a run
    # fails on), which is google.rpc.Code's INVALID_ARGUMENT, and what TF Serving
    # reports for a run failing on its inputs.
    422: Status(
        "INVALID_ARGUMENT",
        "the upload could not be folded, exported or verified (the report is included)",
    ),
    429: Status(
        "RESOURCE_EXHAUSTED", "an upload while too many jobs are unfinished (see Retry-After)"
    ),
    431: Status("RESOURCE_EXHAUSTED", "request headers too large or too many (connection closed)"),
    500: Status("INTERNAL"),
    501: Status("UNIMPLEMENTED"),
    503: Status(
        "UNAVAILABLE", "the server is starting or shutting down, or the version is not loaded"
    ),
    504: Status(
        "DEADLINE_EXCEEDED", "a model run took longer than its time budget and was stopped"
    ),
    507: Status(
        "RESOURCE_EXHAUSTED", "an upload that staging or the disk has no room for (names what)"
    ),
}
ERROR_CODES = {status: entry.code for status, entry in STATUSES.items()}


def error_code(status: int | None, default: str = "UNKNOWN") -> str:
    """The canonical error code of an HTTP status (``default`` for one not in the table)."""
    return ERROR_CODES.get(status or 0, default)


class ServingError(Exception):
    """An error with the HTTP status it is answered with: ``class NotFound(ServingError,
    status_code=404)``."""

    status_code = 500
    headers: dict[str, str] | None = None
    """Extra response headers (``Retry-After``)."""

    def __init_subclass__(cls, status_code: int | None = None, **options: Any) -> None:
        super().__init_subclass__(**options)
        if status_code is not None:
            cls.status_code = status_code

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


class InvalidInput(ServingError, status_code=400):
    """The request is wrong whatever the server's state: a field, value or file."""


class Unauthorized(ServingError, status_code=401):
    """A token is set on the server and the request lacks it."""


class NotFound(ServingError, status_code=404):
    """No such model, version, job or file."""


class Conflict(ServingError, status_code=409):
    """The request conflicts with the state of what it names (a finished job)."""


class TooLarge(ServingError, status_code=413):
    """A body, tensor or archive over its limit."""


class Unprocessable(ServingError, status_code=422):
    """A well-formed request the model cannot take: an upload that cannot be folded,
    exported or verified, or a run that fails on the inputs given."""


class NotReady(ServingError, status_code=503):
    """Starting, shutting down, or the version is not loaded."""


class Unimplemented(ServingError, status_code=501):
    """A method of a protocol that foldserve does not serve, saying what to call instead."""


class DeadlineExceeded(ServingError, status_code=504):
    """A model run that took longer than its time budget and was stopped. 504, as a
    gateway answers for an upstream that did not answer in time (gRPC's
    DEADLINE_EXCEEDED is its counterpart)."""


class TooManyRequests(ServingError, status_code=429):
    """Too much work queued; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class InsufficientStorage(ServingError, status_code=507):
    """Something could not be written: no space (or over a storage budget)."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.headers = {"Retry-After": str(retry_after)}
