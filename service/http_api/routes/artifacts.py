"""A stored version's files: its fold report and its two ONNX models."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import FileResponse

from service.core.repository import (
    FOLDED_FILE,
    PRECISIONS,
    REPORT_FILE,
    UNFOLDED_FILE,
    parse_version,
    variant_file,
)
from service.errors import NotFound
from service.http_api.deps import ApiAuth, DataPlaneDep, JSONResponse

router = APIRouter(tags=["Model store"], dependencies=[ApiAuth])

ONNX_RESPONSE = {200: {"content": {"application/octet-stream": {}}}}


@router.get(
    "/v1/models/{name}/versions/{version}/report",
    response_class=FileResponse,
    responses={200: {"content": {"application/json": {}}}},
)
async def report(name: str, version: str, dataplane: DataPlaneDep) -> FileResponse:
    """The version's fold report (report.json); ``version`` may be ``latest``. A version
    whose upload job failed answers ``{"failed": true, "failure": {"stage", "error",
    "status_code", "job", "file", "timings"}, "report"}`` (the verification report of a
    fold that failed its tolerance, else null) until it is deleted."""
    try:
        path = await dataplane.catalog.artifact(name, version, REPORT_FILE)
    except NotFound:
        failure = await dataplane.uploads.failure(name, parse_version(version))
        if failure is None:
            raise
        return JSONResponse(failure)
    return FileResponse(path, media_type="application/json")


@router.get(
    "/v1/models/{name}/versions/{version}/model.onnx",
    response_class=FileResponse,
    responses=ONNX_RESPONSE,
)
async def folded_model(name: str, version: str, dataplane: DataPlaneDep) -> FileResponse:
    """The folded ONNX model, as served."""
    return await _download(dataplane, name, version, FOLDED_FILE)


@router.get(
    "/v1/models/{name}/versions/{version}/unfolded.onnx",
    response_class=FileResponse,
    responses=ONNX_RESPONSE,
)
async def unfolded_model(name: str, version: str, dataplane: DataPlaneDep) -> FileResponse:
    """The unfolded ONNX export the folded one was verified against."""
    return await _download(dataplane, name, version, UNFOLDED_FILE)


@router.get(
    "/v1/models/{name}/versions/{version}/model.{precision}.onnx",
    response_class=FileResponse,
    responses=ONNX_RESPONSE,
)
async def variant_model(
    name: str, version: str, precision: str, dataplane: DataPlaneDep
) -> FileResponse:
    """A reduced-precision variant (``precision``: fp16 or int8), when it was made and passed."""
    if precision not in PRECISIONS:
        raise NotFound(f"no precision variant {precision!r}; variants are {', '.join(PRECISIONS)}")
    return await _download(dataplane, name, version, variant_file(precision))


async def _download(dataplane, name: str, version: str, file_name: str) -> FileResponse:
    path = await dataplane.catalog.artifact(name, version, file_name)
    number = path.parent.name
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{name}-{number}-{file_name}",
    )
