"""A stored version's files: its fold report and its two ONNX models."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import FileResponse

from service.deps import ApiAuth, DataPlaneDep
from service.repository import FOLDED_FILE, REPORT_FILE, UNFOLDED_FILE

router = APIRouter(tags=["Model store"], dependencies=[ApiAuth])

ONNX_RESPONSE = {200: {"content": {"application/octet-stream": {}}}}


@router.get(
    "/v1/models/{name}/versions/{version}/report",
    response_class=FileResponse,
    responses={200: {"content": {"application/json": {}}}},
)
async def report(name: str, version: str, dataplane: DataPlaneDep) -> FileResponse:
    """The version's fold report (report.json); ``version`` may be ``latest``."""
    path = await dataplane.artifact(name, version, REPORT_FILE)
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


async def _download(dataplane, name: str, version: str, file_name: str) -> FileResponse:
    path = await dataplane.artifact(name, version, file_name)
    number = path.parent.name
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{name}-{number}-{file_name}",
    )
