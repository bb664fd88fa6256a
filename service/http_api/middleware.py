"""ASGI middleware: request-size limits and per-model, per-endpoint metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from service.errors import TooLarge, render
from service.metrics import Metrics

UPLOAD_PATH = "/v1/models"


@dataclass
class LimitsAndMetrics:
    """Refuses a body over its limit (413) and counts every request by model and endpoint."""

    app: Any
    max_request_bytes: int
    max_upload_bytes: int
    metrics: Metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH
        limit = self.max_upload_bytes if is_upload else self.max_request_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = render(
                TooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        status = 500

        async def observed_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, limited_receive, observed_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            model = _model_label(scope)
            self.metrics.requests.labels(model, endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(model, endpoint).observe(time.perf_counter() - started)


UNKNOWN_MODEL = "(unknown)"


def _model_label(scope: dict) -> str:
    """The model a request named, if it is loaded; any other name is one label, so that
    requests to random names cannot grow the metrics without bound."""
    name = scope.get("path_params", {}).get("name", "")
    if not name:
        return ""
    dataplane = getattr(scope["app"].state, "dataplane", None) if "app" in scope else None
    if dataplane is not None and dataplane.registry.is_loaded(name):
        return name
    return UNKNOWN_MODEL


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
