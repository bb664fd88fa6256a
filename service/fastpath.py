"""The prediction endpoints without the framework's routing and dependency machinery.

``POST .../:predict`` and ``POST .../infer`` carry almost all traffic, and for a
small model FastAPI's per-request routing and dependency resolution cost
several times the inference itself (see docs/benchmarks.md). This middleware
matches those two paths with one regular expression each and calls the very
same route functions the FastAPI router declares (which still document them
in the OpenAPI schema and serve as the fallback); authentication and error
rendering are the same as on every other route.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from service.deps import JSONResponse, require_api
from service.errors import ServingError
from service.routes import tfserving, v2

logger = logging.getLogger("foldserve.fastpath")

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class _Route:
    """Stands in for the router's route in ``scope["route"]`` (read by the metrics)."""

    path: str
    pattern: re.Pattern
    handler: Handler


_ROUTES = (
    _Route(
        "/v1/models/{name}:predict",
        re.compile(r"/v1/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+))?:predict"),
        tfserving.predict,
    ),
    _Route(
        "/v2/models/{name}/infer",
        re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer"),
        v2.infer,
    ),
)


class FastPath:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in _ROUTES:
                match = route.pattern.fullmatch(scope["path"])
                if match is not None:
                    await self._handle(route, match, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _handle(
        self, route: _Route, match: re.Match, scope: dict, receive: Any, send: Any
    ) -> None:
        scope["route"] = route
        scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
        request = Request(scope, receive)
        app = scope["app"]
        try:
            await require_api(request, app.state.settings)
            response = await route.handler(
                request=request, dataplane=app.state.dataplane, **scope["path_params"]
            )
        except ServingError as error:
            response = JSONResponse(error.body(), status_code=error.status_code)
        except Exception as error:
            logger.exception("unhandled error on POST %s", scope["path"])
            response = JSONResponse({"error": f"internal error: {type(error).__name__}"}, 500)
        await response(scope, receive, send)
