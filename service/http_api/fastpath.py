"""The prediction endpoints, served without the framework's routing and dependency
machinery: the one way a prediction reaches the dataplane.

``POST .../:predict`` and ``POST .../infer`` carry almost all traffic, and for a
small model FastAPI's per-request routing and dependency resolution cost
several times the inference itself (see docs/benchmarks.md). This middleware
matches those two paths with one regular expression each and calls the
protocol handlers (``routes.tfserving.predict``, ``routes.v2.infer``), which
no FastAPI router declares: there is no second, shadow declaration whose
``dependencies=`` could be silently skipped. Authentication (``require_api``)
is called here, explicitly, and errors are rendered by ``errors.render`` as
everywhere else. ``service.http_api.openapi`` documents the two endpoints.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from service.errors import InternalError, ServingError, render
from service.http_api.deps import require_api
from service.http_api.routes import tfserving, v2

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
            response = render(error)
        except ClientDisconnect:  # gone, or cut off for sending too slowly: nobody to answer
            logger.info("client left during POST %s", scope["path"])
            return
        except Exception as error:
            logger.exception("unhandled error on POST %s", scope["path"])
            response = render(InternalError(f"internal error: {type(error).__name__}"))
        await response(scope, receive, send)
