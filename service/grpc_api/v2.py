"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

Served by grpc.aio in the same process and event loop as the HTTP server, over the same
DataPlane (and so the same registry and dynamic batcher). The messages and the service
stub are the generated modules of Triton's ``grpc_service.proto``, shipped by
``tritonclient[grpc]``; Triton's service is a superset of KServe's with the same
package (``inference``), method and message names. From the KServe spec::

    service GRPCInferenceService {
      rpc ServerLive(ServerLiveRequest) returns (ServerLiveResponse) {}
      rpc ServerReady(ServerReadyRequest) returns (ServerReadyResponse) {}
      rpc ModelReady(ModelReadyRequest) returns (ModelReadyResponse) {}
      rpc ServerMetadata(ServerMetadataRequest) returns (ServerMetadataResponse) {}
      rpc ModelMetadata(ModelMetadataRequest) returns (ModelMetadataResponse) {}
      rpc ModelInfer(ModelInferRequest) returns (ModelInferResponse) {}
    }

plus Triton's ``RepositoryIndex``, ``ModelConfig``, ``ModelStatistics`` and
``ModelStreamInfer``. The rest of Triton's methods (shared memory, trace, log settings,
repository load/unload) answer UNIMPLEMENTED.
Errors are gRPC status codes (a ``ServingError``'s HTTP status mapped to its gRPC
kind); the API token is the ``authorization: Bearer <token>`` metadata entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.core.dataplane import DataPlane
from service.errors import NotFound, NotReady, ServingError
from service.grpc_api.calls import Servicer
from service.grpc_api.tfserving import TFServingService, generic_handlers
from service.http_api.middleware import UNKNOWN_MODEL
from service.metrics import Metrics
from service.protocols.grpc_tensors import parse_inputs, render_outputs
from service.protocols.v2 import (
    EXTENSIONS,
    INDEX_STATES,
    model_config,
    refuse_classification,
    tensor_metadata,
)
from service.settings import Settings

logger = logging.getLogger("foldserve.grpc")


class InferenceService(Servicer, pb_grpc.GRPCInferenceServiceServicer):
    """Each method parses its message, calls the DataPlane, and builds the reply."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        super().__init__(settings)
        self.dataplane = dataplane

    # -- health and metadata -------------------------------------------------------

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ServerMetadata(self, request, context):
        server = self.dataplane.catalog.server_metadata()
        return pb.ServerMetadataResponse(
            name=server.name, version=server.version, extensions=EXTENSIONS
        )

    async def ModelReady(self, request, context):
        async def handle():
            ready = self.dataplane.catalog.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready)

        return await self.answer(context, handle)

    async def ModelMetadata(self, request, context):
        async def handle():
            model = self.dataplane.catalog.model_metadata(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                name=model.name,
                versions=[str(number) for number in model.versions],
                platform=model.platform,
                inputs=[
                    pb.ModelMetadataResponse.TensorMetadata(**meta)
                    for meta in tensor_metadata(model.inputs)
                ],
                outputs=[
                    pb.ModelMetadataResponse.TensorMetadata(**meta)
                    for meta in tensor_metadata(model.outputs)
                ],
            )

        return await self.answer(context, handle)

    async def RepositoryIndex(self, request, context):
        async def handle():
            if request.repository_name and request.repository_name != "models":
                raise NotFound(f"no repository named '{request.repository_name}'")
            entries = await self.dataplane.catalog.repository_index(ready_only=request.ready)
            models = [  # as POST /v2/repository/index: the reason included
                pb.RepositoryIndexResponse.ModelIndex(
                    name=entry.name,
                    version=str(entry.version),
                    state=INDEX_STATES[entry.state],
                    reason=entry.reason,
                )
                for entry in entries
            ]
            return pb.RepositoryIndexResponse(models=models)

        return await self.answer(context, handle)

    # -- inference -----------------------------------------------------------------

    async def ModelInfer(self, request, context):
        return await self.answer(context, lambda: self._infer(request))

    async def ModelStreamInfer(self, request_iterator, context):
        """Triton's streaming inference: each request on the stream gets its response, in
        order; a request that fails gets ``error_message`` (as Triton sends it) and the
        stream goes on."""
        await self.answer(context, self._authorized)
        async for request in request_iterator:
            try:
                response = await self._infer(request)
            except ServingError as error:
                yield pb.ModelStreamInferResponse(error_message=error.message)
                continue
            except Exception as error:  # never a traceback to the client
                logger.exception("unhandled error in a streamed inference")
                message = f"internal error: {type(error).__name__}"
                yield pb.ModelStreamInferResponse(error_message=message)
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    async def _authorized(self) -> None:
        return None

    async def _infer(self, request):
        if not self.dataplane.ready:
            raise NotReady("server is starting")
        model = self.dataplane.get(request.model_name, request.model_version or None)
        inputs = parse_inputs(request, model.inputs)
        for output in request.outputs:
            classification = output.parameters.get("classification")
            if classification is not None:
                refuse_classification(output.name, classification.int64_param)
        wanted = [output.name for output in request.outputs] or None
        outputs = await self.dataplane.infer(model, inputs, wanted)
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request.id
        )
        render_outputs(response, outputs, raw=bool(request.raw_input_contents))
        return response

    # -- configuration and statistics (as GET /v2/models/{name}/config and /stats) ------

    async def ModelConfig(self, request, context):
        async def handle():
            model = self.dataplane.get(request.name, request.version or None)
            config = json_format.ParseDict(model_config(model), model_config_pb2.ModelConfig())
            return pb.ModelConfigResponse(config=config)

        return await self.answer(context, handle)

    async def ModelStatistics(self, request, context):
        async def handle():
            stats = self.dataplane.catalog.statistics(request.name or None, request.version or None)
            return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

        return await self.answer(context, handle)


def _unimplemented(name: str) -> Callable[..., Awaitable[None]]:
    """A Triton method foldserve does not serve: UNIMPLEMENTED and one debug line (the
    generated base raises NotImplementedError, which grpc logs with a traceback)."""

    async def method(self: InferenceService, request: Any, context: grpc.aio.ServicerContext):
        logger.debug("gRPC %s is not implemented", name)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")

    method.__name__ = name
    return method


for _name in vars(pb_grpc.GRPCInferenceServiceServicer):
    if not _name.startswith("_") and _name not in vars(InferenceService):
        setattr(InferenceService, _name, _unimplemented(_name))


GRPC_METHOD = "GRPC"
"""The ``method`` label of gRPC calls in ``foldserve_requests_total`` (HTTP ones carry
GET, POST, ...); their ``endpoint`` is the full method path and ``status`` the gRPC
status code's name (OK, NOT_FOUND, INVALID_ARGUMENT, ...)."""


class CallMetrics(grpc.aio.ServerInterceptor):
    """Counts and times every unary call in the same families as HTTP requests, by
    model (a loaded model's name, else one label for any other name), method and code."""

    def __init__(self, metrics: Metrics, dataplane: DataPlane) -> None:
        self.metrics = metrics
        self.dataplane = dataplane

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        endpoint = handler_call_details.method
        behaviour = handler.unary_unary

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await behaviour(request, context)
            except BaseException:
                code = getattr(context.code(), "name", None) or "UNKNOWN"
                raise
            finally:
                model = self._model_label(request)
                self.metrics.requests.labels(model, endpoint, GRPC_METHOD, code).inc()
                self.metrics.latency.labels(model, endpoint).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _model_label(self, request: Any) -> str:
        spec = getattr(request, "model_spec", None)  # TF Serving's requests
        name = (
            getattr(request, "model_name", None)
            or getattr(request, "name", None)
            or getattr(spec, "name", None)
            or ""
        )
        if not name:
            return ""
        return name if self.dataplane.registry.is_loaded(name) else UNKNOWN_MODEL


async def start_grpc_server(settings: Settings, dataplane: DataPlane) -> grpc.aio.Server:
    """Bind ``settings.host:settings.grpc_port`` and start serving on the running loop.

    With several worker processes, each binds the same port (SO_REUSEPORT) as uvicorn's
    workers share the HTTP one; with one, a port already taken is an error.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    server = grpc.aio.server(
        interceptors=[CallMetrics(dataplane.metrics, dataplane)], options=options
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(dataplane, settings), server
    )
    server.add_generic_rpc_handlers(generic_handlers(TFServingService(dataplane, settings)))
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {error}") from None
    if not bound:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await server.start()
    logger.info("Open Inference gRPC on %s", address)
    return server
