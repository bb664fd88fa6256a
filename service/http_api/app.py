"""``create_app(settings)``: the FastAPI application, built only when asked for."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse

from service import __version__
from service.core.dataplane import DataPlane
from service.core.repository import Repository
from service.errors import InternalError, InvalidInput, ServingError, render
from service.http_api.bodies import BodyCodec
from service.http_api.deps import require_api
from service.http_api.fastpath import FastPath
from service.http_api.middleware import LimitsAndMetrics
from service.http_api.openapi import ERROR_RESPONSES, install_docs
from service.http_api.routes import artifacts, console, jobs, models, tfserving, v2
from service.jobs.worker_pool import NO_FOLDING_ON_RAY, FoldWorkerPool
from service.metrics import Metrics
from service.runtime.sessions import Runtime
from service.settings import Settings

logger = logging.getLogger("foldserve")


def _mark_not_ready_on_sigterm(dataplane: DataPlane, grace: float) -> None:
    """On SIGTERM readiness turns 503 at once, and uploads waiting for their job answer
    503 before ``grace`` (the graceful-shutdown timeout) runs out; the server's own
    handler (chained) then stops accepting connections and lets in-flight requests
    finish. Called in the event loop."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: Any) -> None:
        dataplane.ready = False
        dataplane.draining = True
        loop.call_soon_threadsafe(dataplane.uploads.shutting_down, grace)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


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
            memory_limit_mb=settings.model_memory_limit_mb,
        )
        fold_workers = FoldWorkerPool(
            settings.fold_rtol,
            settings.fold_samples,
            settings.fold_timeout,
            export_rtol=settings.fold_export_rtol,
            noise_factor=settings.fold_noise_factor,
            archive_limits=(settings.max_archive_bytes, settings.max_archive_entries),
            memory_limit_mb=settings.fold_memory_limit_mb,
            file_limit_mb=settings.fold_file_limit_mb,
            custom_objects=settings.custom_objects,
            skip_scan=settings.unsafe_skip_scan,
            **_ray_replica_folding(settings),
        )
        fold_workers.announce_confinement(required=settings.require_confinement)
        dataplane = DataPlane(
            settings, Repository(settings.models_dir), runtime, fold_workers, metrics
        )
        app.state.dataplane = dataplane
        app.state.bodies.start()
        _mark_not_ready_on_sigterm(dataplane, settings.shutdown_timeout)
        _freeze_startup_objects()
        await dataplane.start()
        grpc_server = None
        try:
            if settings.grpc_port:
                from service.grpc_api.v2 import start_grpc_server

                grpc_server = await start_grpc_server(settings, dataplane)
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            await dataplane.stop()
            app.state.bodies.stop()

    app = FastAPI(
        title="foldserve",
        version=__version__,
        description="BatchNormalization-folded Keras models on ONNX Runtime, over the "
        "TensorFlow Serving REST and Open Inference (V2) protocols.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.bodies = BodyCodec(settings.large_body_bytes)
    install_docs(app)
    app.add_middleware(FastPath)
    app.add_middleware(
        LimitsAndMetrics,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        metrics=metrics,
    )

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, error: ServingError) -> Response:
        return render(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        response = render(_status_error(error.status_code, str(error.detail)))
        response.headers.update(getattr(error, "headers", None) or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return render(InvalidInput(f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect) -> Response:
        # the client closed the connection (or it was cut off for sending too slowly)
        # before its request had arrived: nobody is left to answer
        logger.info("client left during %s %s", request.method, request.url.path)
        return render(InvalidInput("the client disconnected before its request had arrived"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(InternalError(f"internal error: {type(error).__name__}"))

    @app.get("/metrics", tags=["Monitoring"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> Response:
        """Needs the API token when one is set, unless FOLDSERVE_METRICS_PUBLIC is true."""
        if not settings.metrics_public:
            await require_api(request, settings)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(models.router)
    app.include_router(console.router)
    app.include_router(jobs.router)
    app.include_router(artifacts.router)
    app.include_router(tfserving.router)
    app.include_router(v2.router)
    return app


def _freeze_startup_objects() -> None:
    """Move what start-up left alive (modules, the app) out of the collector's sight:
    a full collection over them held the event loop for about 80 ms on this machine,
    every request waiting that long at the tail. Called before any model is loaded: an
    executor lives in reference cycles, and a frozen one would never be collected once
    its version is unloaded. What requests and later loads allocate is collected as
    before."""
    gc.collect()
    gc.freeze()


def _ray_replica_folding(settings: Settings) -> dict[str, Any]:
    """Ray Serve replicas never fold (service/engines/ray.py): uploads get a 409 naming where."""
    if settings.engine != "ray":
        return {}
    return {"available": False, "refusal": NO_FOLDING_ON_RAY}


def _status_error(status: int, message: str) -> ServingError:
    """A framework HTTPException (404 for an unknown path, 405, ...) as one of ours."""
    error = ServingError(message)
    error.status_code = status
    return error


def create_app_from_environment() -> FastAPI:
    """The uvicorn factory used by ``foldserve serve``: settings from FOLDSERVE_*."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(settings)
