"""The web console at ``/ui``: static files shipped in the package (service/ui/), no CDN.

Every asset is served from here, and the Content-Security-Policy keeps the page to
this origin: a console opened on a machine with no internet works all the same.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse

from service.errors import NotFound

ASSETS = Path(__file__).resolve().parent.parent / "ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["Console"], include_in_schema=False)


@router.get("/ui")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
async def console_page() -> FileResponse:
    return _asset("index.html")


@router.get("/ui/{asset}")
async def console_asset(asset: str) -> FileResponse:
    return _asset(asset)


def _asset(name: str) -> FileResponse:
    path = ASSETS / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        raise NotFound(f"no console file {name!r}")
    return FileResponse(path, media_type=media_type, headers=HEADERS)
