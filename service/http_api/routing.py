"""Declaring a route for a model's latest version and for one version at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

Endpoint = Callable[..., Any]


def per_version(router: APIRouter, **shared: Any) -> Callable[..., Callable[[Endpoint], Endpoint]]:
    """``route = per_version(router, dependencies=[...])``, then ``@route("GET", path,
    response_model=...)``: the endpoint on ``path`` (``{name}``'s latest version) and on
    the same path for one version (``{name}/versions/{version}``, its ``version``
    parameter then in the path). Options as for ``router.add_api_route``."""

    def route(method: str, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            for each in (path, path.replace("{name}", "{name}/versions/{version}", 1)):
                router.add_api_route(each, endpoint, methods=[method], **shared, **options)
            return endpoint

        return register

    return route
