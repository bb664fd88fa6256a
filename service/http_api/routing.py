"""Declaring a route for a model's latest version and for one version at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

Endpoint = Callable[..., Any]


def each_version(router: APIRouter, method: str, path: str, **options: Any) -> Callable:
    """Decorator: the endpoint on ``path`` (``{name}``'s latest version) and on the same
    path for one version (``{name}/versions/{version}``), its ``version`` parameter
    then in the path; the other options as for ``router.add_api_route``."""

    def register(endpoint: Endpoint) -> Endpoint:
        versioned = path.replace("{name}", "{name}/versions/{version}", 1)
        for each in (path, versioned):
            router.add_api_route(each, endpoint, methods=[method], **options)
        return endpoint

    return register
