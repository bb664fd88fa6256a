"""Named dependencies: what a route needs, said in its signature."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request, Response

from service.core.dataplane import DataPlane
from service.errors import Unauthorized
from service.protocols.codecs import parse_json, to_json
from service.settings import Settings


async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(given: str | None, *tokens: str | None) -> bool:
    return given is not None and any(
        token is not None and hmac.compare_digest(given.encode(), token.encode())
        for token in tokens
    )


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """Writes need the admin token; with only an API token set, they need that one.

    A server with any token set never takes an anonymous write.
    """
    if settings.admin_token:
        if not _matches(_bearer(request), settings.admin_token):
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <admin token>'")
    elif settings.api_token and not _matches(_bearer(request), settings.api_token):
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <api token>'")


async def require_api(request: Request, settings: SettingsDep) -> None:
    if settings.api_token and not _matches(
        _bearer(request), settings.api_token, settings.admin_token
    ):
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <api token>'")


AdminAuth = Depends(require_admin)
ApiAuth = Depends(require_api)


OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded in a worker thread, not on the event loop,
so that one large request does not stall every other one."""


async def json_body(request: Request) -> Any:
    raw = await request.body()
    return await off_loop(parse_json, raw, size=len(raw))


async def off_loop(function: Any, *args: Any, size: int) -> Any:
    """``function(*args)``, in a worker thread when ``size`` (bytes of input) is large."""
    if size > OFFLOAD_BYTES:
        return await anyio.to_thread.run_sync(function, *args)
    return function(*args)


class JSONResponse(Response):
    """JSON rendered by orjson; numpy arrays are serialised natively."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content)
