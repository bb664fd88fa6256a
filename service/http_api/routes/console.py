"""The web console: ``/ui`` and its static files, shipped in the package (no CDN).

The page holds no data of its own; everything it shows comes from the API with the
token the user gives it, so the files themselves are served without a token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse

from service.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[2] / "console"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything from this origin only: no inline script, no fonts or scripts from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> FileResponse:
    path = STATIC / name
    if path.suffix not in MEDIA_TYPES or path.parent != STATIC or not path.is_file():
        raise NotFound(f"no console file '{name}'")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


@router.get("/ui")
@router.get("/ui/")
async def console() -> FileResponse:
    return _file("index.html")


@router.get("/ui/{name}")
async def console_file(name: str) -> FileResponse:
    """One of the console's own files (``/ui/console.js``); nothing else is reachable."""
    return _file(name)
