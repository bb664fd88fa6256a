"""The Open Inference Protocol (V2): server and model metadata, health, infer."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request, Response

from service.errors import InvalidInput, NotReady
from service.http_api import bodies
from service.http_api.bodies import BodyCodec, specs
from service.http_api.deps import ApiAuth, DataPlaneDep, JSONResponse
from service.http_api.routing import per_version
from service.protocols import v2
from service.protocols.schemas_v2 import (
    KServeV1LiveResponse,
    ModelConfigResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    RepositoryIndexEntry,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
    StatisticsResponse,
)

router = APIRouter(tags=["Open Inference Protocol (V2)"])
versioned = per_version(router, dependencies=[ApiAuth])
REFUSED = "never sent: the 400 says how models are loaded and unloaded"


@router.get("/v2", response_model=ServerMetadataResponse)
async def server_metadata(dataplane: DataPlaneDep) -> JSONResponse:
    server = dataplane.catalog.server_metadata()
    return JSONResponse(
        {
            "name": server.name,
            "version": server.version,
            "extensions": v2.EXTENSIONS,
            "execution_provider": server.execution_provider,
            "confinement": server.confinement,
        }
    )


@router.get("/v2/health/live", response_model=ServerLiveResponse)
async def live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/", tags=["KServe V1"], response_model=KServeV1LiveResponse)
async def v1_live() -> JSONResponse:
    """KServe's v1 protocol liveness (``GET /``, read by the KServe SDK's ``is_server_live``)."""
    return JSONResponse({"status": "alive"})


@router.get("/v2/health/ready", response_model=ServerReadyResponse)
async def ready(dataplane: DataPlaneDep) -> JSONResponse:
    if dataplane.draining:
        raise NotReady("server is shutting down")
    if not dataplane.ready:
        raise NotReady("server is starting")
    return JSONResponse({"ready": True})


@router.get("/v2/models/stats", dependencies=[ApiAuth], response_model=StatisticsResponse)
@versioned("GET", "/v2/models/{name}/stats", response_model=StatisticsResponse)
async def statistics(
    dataplane: DataPlaneDep, name: str | None = None, version: str | None = None
) -> JSONResponse:
    """Triton's statistics extension: queue, compute and per-batch-size figures."""
    return JSONResponse({"model_stats": dataplane.catalog.statistics(name, version)})


@versioned("GET", "/v2/models/{name}", response_model=ModelMetadataResponse)
async def model_metadata(
    name: str, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    model = dataplane.catalog.model_metadata(name, version)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [str(number) for number in model.versions],
            "platform": model.platform,
            "inputs": v2.tensor_metadata(model.inputs),
            "outputs": v2.tensor_metadata(model.outputs),
            "parameters": {
                "execution_provider": model.execution_provider,
                "version": str(model.version),
            },
        }
    )


@versioned("GET", "/v2/models/{name}/config", response_model=ModelConfigResponse)
async def model_config(
    name: str, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    return JSONResponse(v2.model_config(dataplane.get(name, version)))


@versioned("GET", "/v2/models/{name}/ready", response_model=ModelReadyResponse)
async def model_ready(
    name: str, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    model = dataplane.get(name, version)
    return JSONResponse({"name": model.name, "version": str(model.version), "ready": True})


@router.post(
    "/v2/repository/index", dependencies=[ApiAuth], response_model=list[RepositoryIndexEntry]
)
async def repository_index(dataplane: DataPlaneDep) -> JSONResponse:
    entries = []
    for entry in await dataplane.catalog.repository_index():
        row = {"name": entry.name, "version": str(entry.version)}
        row["state"] = v2.INDEX_STATES[entry.state]
        if entry.reason:
            row["reason"] = entry.reason
        entries.append(row)
    return JSONResponse(entries)


@router.post(
    "/v2/repository/models/{name}/load", dependencies=[ApiAuth], response_description=REFUSED
)
@router.post(
    "/v2/repository/models/{name}/unload", dependencies=[ApiAuth], response_description=REFUSED
)
async def load_or_unload(name: str) -> None:
    """Triton's model_repository extension: refused, as Triton refuses it (400) when it
    polls its repository."""
    raise InvalidInput(
        "explicit model load / unload is not allowed: foldserve loads every version in its "
        "models directory itself; upload (POST /v1/models) or delete "
        "(DELETE /v1/models/{name}[/versions/{v}]) instead"
    )


LOGS = "log settings: the server logs to its standard error (FOLDSERVE_LOG_LEVEL)"
TRACES = "trace settings: request timings are in /metrics and /v2/models/{name}/stats"
SHARED_MEMORY = "shared-memory extensions: send the tensors in the request body"
NOT_SERVED = {
    "/v2/logging": LOGS,
    "/v2/trace/setting": TRACES,
    "/v2/models/{name}/trace/setting": TRACES,
    "/v2/systemsharedmemory/{rest:path}": SHARED_MEMORY,
    "/v2/cudasharedmemory/{rest:path}": SHARED_MEMORY,
}
"""Triton extensions foldserve does not serve (over gRPC they answer UNIMPLEMENTED)."""


def _refuse(reason: str):
    async def refuse() -> None:
        raise InvalidInput(f"foldserve does not serve Triton's {reason}")

    return refuse


for _path, _reason in NOT_SERVED.items():
    router.add_api_route(_path, _refuse(_reason), methods=["GET", "POST"], include_in_schema=False)


async def infer(
    name: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> Response:
    """Served by ``service.http_api.fastpath``; the wire format is ``service.protocols.v2``'s."""
    model = dataplane.get(name, version)
    limit = request.app.state.settings.max_request_bytes
    codec: BodyCodec = request.app.state.bodies
    parsed = await codec.decode(
        request, bodies.decode_v2, bodies.v2_headers(request.headers), limit, specs(model.inputs)
    )
    outputs = await dataplane.infer(model, parsed.inputs, parsed.outputs)
    answered = dataclasses.replace(parsed, inputs={})  # what encoding needs of the request
    content, headers = await codec.run(
        bodies.encode_v2,
        model.name,
        model.version,
        answered,
        outputs,
        size=bodies.output_bytes(outputs),
    )
    media_type = "application/octet-stream" if headers else "application/json"
    return Response(content=content, media_type=media_type, headers=headers)
