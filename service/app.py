"""``create_app(settings)``: the FastAPI application, built only when asked for."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from service import __version__
from service.dataplane import DataPlane
from service.deps import JSONResponse
from service.errors import ServingError
from service.fastpath import FastPath
from service.folder import Folder
from service.metrics import Metrics
from service.middleware import LimitsAndMetrics
from service.repository import Repository
from service.routes import models, tfserving, v2
from service.runtime import Runtime
from service.settings import Settings

logger = logging.getLogger("foldserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(
            settings.device,
            settings.intra_op_threads,
            settings.inter_op_threads,
            settings.thread_spinning,
        )
        folder = Folder(settings.fold_rtol, settings.fold_samples, settings.fold_timeout)
        dataplane = DataPlane(settings, Repository(settings.models_dir), runtime, folder, metrics)
        app.state.dataplane = dataplane
        await dataplane.start()
        grpc_server = None
        try:
            if settings.grpc_port:
                from service.grpc_server import start_grpc_server

                grpc_server = await start_grpc_server(settings, dataplane)
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            await dataplane.stop()

    app = FastAPI(
        title="foldserve",
        version=__version__,
        description="BatchNormalization-folded Keras models on ONNX Runtime, over the "
        "TensorFlow Serving REST and Open Inference (V2) protocols.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(FastPath)
    app.add_middleware(
        LimitsAndMetrics,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        metrics=metrics,
    )

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, error: ServingError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status_code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(error.detail)},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, 500)

    @app.get("/metrics", tags=["Monitoring"])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(models.router)
    app.include_router(tfserving.router)
    app.include_router(v2.router)
    return app


def create_app_from_environment() -> FastAPI:
    """The uvicorn factory used by ``foldserve serve``: settings from FOLDSERVE_*."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(settings)
