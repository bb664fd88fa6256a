"""The Open Inference Protocol (V2): server and model metadata, health, infer."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Request, Response

from service import __version__, v2
from service.deps import ApiAuth, DataPlaneDep, JSONResponse, off_loop, parse_json
from service.errors import InvalidInput, NotReady, TooLarge

router = APIRouter(tags=["Open Inference Protocol (V2)"])
HEADER_LENGTH = "Inference-Header-Content-Length"
# The repository index (POST /v2/repository/index) is served, but not the rest of the
# model_repository extension (load/unload): every model in the store is loaded.
EXTENSIONS = ["binary_tensor_data", "statistics"]


@router.get("/v2")
async def server_metadata(dataplane: DataPlaneDep) -> JSONResponse:
    return JSONResponse(
        {
            "name": "foldserve",
            "version": __version__,
            "extensions": EXTENSIONS,
            "execution_provider": dataplane.runtime.provider,
        }
    )


@router.get("/v2/health/live")
async def live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/v2/health/ready")
async def ready(dataplane: DataPlaneDep) -> JSONResponse:
    if dataplane.draining:
        raise NotReady("server is shutting down")
    if not dataplane.ready:
        raise NotReady("server is starting")
    return JSONResponse({"ready": True})


@router.get("/v2/models/stats", dependencies=[ApiAuth])
@router.get("/v2/models/{name}/stats", dependencies=[ApiAuth])
@router.get("/v2/models/{name}/versions/{version}/stats", dependencies=[ApiAuth])
async def statistics(
    dataplane: DataPlaneDep, name: str | None = None, version: str | None = None
) -> JSONResponse:
    """Triton's statistics extension: queue, compute and per-batch-size figures."""
    return JSONResponse({"model_stats": dataplane.statistics(name, version)})


@router.get("/v2/models/{name}", dependencies=[ApiAuth])
@router.get("/v2/models/{name}/versions/{version}", dependencies=[ApiAuth])
async def model_metadata(
    name: str, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    model = dataplane.get(name, version)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [str(m.version) for m in dataplane.versions(name)],
            "platform": "onnxruntime_onnx",
            "inputs": v2.tensor_metadata(model.inputs),
            "outputs": v2.tensor_metadata(model.outputs),
            "parameters": {
                "execution_provider": model.folded.provider,
                "version": str(model.version),
            },
        }
    )


@router.get("/v2/models/{name}/config", dependencies=[ApiAuth])
@router.get("/v2/models/{name}/versions/{version}/config", dependencies=[ApiAuth])
async def model_config(
    name: str, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    model = dataplane.get(name, version)

    def dims(metas):
        return [
            {"name": m.name, "data_type": f"TYPE_{v2.v2_datatype(m.dtype)}", "dims": list(m.shape)}
            for m in metas
        ]

    return JSONResponse(
        {
            "name": model.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": dims(model.inputs),
            "output": dims(model.outputs),
        }
    )


@router.get("/v2/models/{name}/ready", dependencies=[ApiAuth])
@router.get("/v2/models/{name}/versions/{version}/ready", dependencies=[ApiAuth])
async def model_ready(
    name: str, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    model = dataplane.get(name, version)
    return JSONResponse({"name": model.name, "version": str(model.version), "ready": True})


@router.post("/v2/repository/index", dependencies=[ApiAuth])
async def repository_index(dataplane: DataPlaneDep) -> JSONResponse:
    entries = []
    for model in await dataplane.catalogue():
        for version in model["versions"]:
            state = {"AVAILABLE": "READY", "LOADING": "LOADING"}.get(
                version["state"], "UNAVAILABLE"
            )
            entry = {"name": model["name"], "version": str(version["version"]), "state": state}
            if "reason" in version:
                entry["reason"] = version["reason"]
            entries.append(entry)
    return JSONResponse(entries)


async def infer(
    name: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> Response:
    model = dataplane.get(name, version)
    limit = request.app.state.settings.max_request_bytes
    body = _decompress(await request.body(), request.headers.get("content-encoding"), limit)
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        header, binary = body, b""
    else:
        digits = header_length.isascii() and header_length.isdigit() and len(header_length) < 19
        if not digits or int(header_length) > len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} does not fit the body")
        header, binary = body[: int(header_length)], body[int(header_length) :]
    parsed = await off_loop(_decode, header, binary, model.inputs, size=len(body))
    outputs = await dataplane.infer(model, parsed.inputs, parsed.outputs)
    response, chunks = v2.render_response(model.name, model.version, parsed, outputs)
    if not chunks:
        return JSONResponse(response)
    json_part = JSONResponse(response).body
    return Response(
        content=json_part + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(json_part))},
    )


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate``, refusing more than ``limit`` bytes out."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}")
    decoder = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidInput(f"body is not valid {encoding}: {error}") from None
    if len(out) > limit:
        raise TooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not decoder.eof:
        raise InvalidInput(f"body is not valid {encoding}: truncated stream")
    return out


def _decode(header: bytes, binary: bytes, expected: Any) -> v2.V2Request:
    return v2.parse_request(parse_json(header), binary, expected)
