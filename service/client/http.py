"""The client's connection to a server: one httpx client whose every failure is a
``ClientError`` carrying the exit code it maps to (``EXIT_*``), and the default URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "DEFAULT_URL",
    "EXIT_AUTH",
    "EXIT_CANCELLED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "STAGES",
    "TERMINAL",
    "Client",
    "ClientError",
    "default_url",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_REFUSED = 1
"""The server refused the request (a 4xx other than those below), or the fold job failed."""
EXIT_USAGE = 2
"""Bad arguments or an unreadable local file (argparse uses 2 as well)."""
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
"""401 or 403: a token is missing or wrong."""
EXIT_UNAVAILABLE = 5
"""The server could not be reached, timed out, answered 5xx, or is not ready."""
EXIT_CANCELLED = 6
"""The fold job was cancelled."""
EXIT_INTERRUPTED = 130

STAGES = ("queued", "loading", "folding", "exporting", "verifying", "quantizing", "committing")
TERMINAL = ("done", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    """A failure to report on one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body


def exit_code_for(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (401, 403):
        return EXIT_AUTH
    if status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


class Client:
    """A thin wrapper over httpx that turns every failure into a ClientError."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        import httpx

        self._httpx = httpx
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer of a 2xx, else a ClientError carrying the server's error."""
        with self.transport():
            response = self.http.request(method, path, **kwargs)
        return self.decode(response)

    def decode(self, response: Any) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if body is None and response.status_code != 204:
                raise ClientError(
                    f"{self.url} answered {response.status_code} with something that is not "
                    "JSON: is it a foldserve server?",
                    EXIT_UNAVAILABLE,
                )
            return body
        message = body.get("error") if isinstance(body, dict) else None
        message = message or f"{response.status_code} {response.reason_phrase}"
        raise ClientError(message, exit_code_for(response.status_code), body)

    @contextmanager
    def stream(self, path: str) -> Iterator[Any]:
        with self.transport(), self.http.stream("GET", path, timeout=None) as response:
            if not response.is_success:
                response.read()
                self.decode(response)
            yield response

    @contextmanager
    def transport(self) -> Iterator[None]:
        try:
            yield
        except self._httpx.TimeoutException:
            raise ClientError(f"{self.url} did not answer in time", EXIT_UNAVAILABLE) from None
        except self._httpx.TransportError as error:
            raise ClientError(f"cannot reach {self.url}: {error}", EXIT_UNAVAILABLE) from None


def default_url(environ: Any = os.environ) -> str:
    """FOLDSERVE_URL; else the server that ``foldserve serve`` starts with the same
    FOLDSERVE_HOST / FOLDSERVE_PORT (a wildcard host is reached on 127.0.0.1)."""
    if environ.get("FOLDSERVE_URL"):
        return environ["FOLDSERVE_URL"]
    host = environ.get("FOLDSERVE_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("FOLDSERVE_PORT") or "8080"
    return f"http://{host}:{port}"
