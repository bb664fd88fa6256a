"""The OpenAPI document, generated from the protocol schemas, and /docs with no internet.

Every body in the document is a schema of ``service.protocols.schemas*``: responses
through the routes' ``response_model=`` and ``responses=``, bodies the routes read
themselves (compare, upload) through their ``openapi_extra``, every error status
from ``service.errors.STATUSES``. What this module adds is what no route declares:
the two prediction endpoints, which ``service.http_api.fastpath`` serves outside the
framework's routing (described here by routes that are never added to the app), and
the demo model's name as the path example Swagger UI prefills. ``install_docs`` serves
Swagger UI (5.x, which reads OpenAPI 3.1) from the files the ``fastapi-offline``
package ships, not a CDN.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from service.errors import STATUSES
from service.protocols.schemas import Error, components, request_body
from service.protocols.schemas_models import CompareRequest, UploadForm
from service.protocols.schemas_tfserving import ExamplesRequest, PredictRequest, PredictResponse
from service.protocols.schemas_v2 import InferenceRequest, InferenceResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": entry.meaning}
    for status, entry in STATUSES.items()
    if entry.meaning is not None
}
"""The error statuses every route documents (``FastAPI(responses=...)``); FastAPI's
own ``422 HTTPValidationError`` is never sent, and a documented 422 keeps it out."""

READ_BY_HAND = [PredictRequest, ExamplesRequest, InferenceRequest, CompareRequest, UploadForm]
"""Request bodies the routes read themselves, documented through ``openapi_extra``:
their nested schemas are added to the components here."""

PATH_EXAMPLES = {"name": "digits", "version": "1"}
"""What Swagger UI prefills in the path: the demo model."""

TF_SERVING, V2 = "TensorFlow Serving REST", "Open Inference Protocol (V2)"
BINARY_OUTPUTS = {
    "description": "the outputs; with binary outputs asked for, the JSON header "
    "(Inference-Header-Content-Length bytes long), then the raw output bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


async def _latest(name: str) -> None:
    """The latest version of ``name``."""


async def _one_version(name: str, version: str) -> None:
    """One version of ``name``."""


def _fast_path(path: str, tag: str, summary: str, request: Any, response: Any) -> APIRoute:
    """A prediction endpoint as the document shows it; never added to the app, so the
    fast path stays the only way a prediction is served."""
    return APIRoute(
        path,
        _one_version if "{version}" in path else _latest,
        methods=["POST"],
        tags=[tag],
        summary=summary,
        operation_id=summary.lower().replace(" ", "_"),
        response_model=response,
        response_description="the outputs",
        responses={**ERROR_RESPONSES, **({200: BINARY_OUTPUTS} if tag == V2 else {})},
        openapi_extra=request_body(request),
    )


FAST_PATHS = [
    _fast_path("/v1/models/{name}:predict", TF_SERVING, "Predict", PredictRequest, PredictResponse),
    _fast_path(
        "/v1/models/{name}/versions/{version}:predict",
        TF_SERVING,
        "Predict with one version",
        PredictRequest,
        PredictResponse,
    ),
    _fast_path("/v2/models/{name}/infer", V2, "Infer", InferenceRequest, InferenceResponse),
    _fast_path(
        "/v2/models/{name}/versions/{version}/infer",
        V2,
        "Infer with one version",
        InferenceRequest,
        InferenceResponse,
    ),
]


def describe(app: FastAPI) -> dict[str, Any]:
    """The document, built once and cached on the app (FastAPI's convention)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=[*app.routes, *FAST_PATHS],
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components(READ_BY_HAND))
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] in PATH_EXAMPLES:
                    parameter.setdefault("example", PATH_EXAMPLES[parameter["name"]])
    app.openapi_schema = schema
    return schema


def install_docs(app: FastAPI) -> None:
    """/docs from files shipped in a package (no CDN); the OpenAPI document from
    ``describe``. Call with ``FastAPI(docs_url=None, redoc_url=None)``."""
    from importlib.resources import files

    app.openapi = lambda: describe(app)  # type: ignore[method-assign]
    assets = str(files("fastapi_offline") / "static")
    app.mount("/docs/assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )
