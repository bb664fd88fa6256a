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


def _onnx_file(description: str) -> dict:
    """The decorator options of a route answering with an ONNX file."""
    return {
        "response_class": FileResponse,
        "responses": {
            200: {
                "description": description,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    }


@router.get(
    "/v1/models/{name}/versions/{version}/report",
    response_class=FileResponse,
    responses={
        200: {
            "description": "report.json, or the failure of the version's upload job",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
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


def _serve_file(file_name: str, route_name: str, summary: str) -> None:
    """``GET .../versions/{version}/<file_name>``: the file, as an attachment."""

    async def download(name: str, version: str, dataplane: DataPlaneDep) -> FileResponse:
        return await _download(dataplane, name, version, file_name)

    download.__doc__ = summary
    router.add_api_route(
        f"/v1/models/{{name}}/versions/{{version}}/{file_name}",
        download,
        methods=["GET"],
        name=route_name,
        **_onnx_file(f"{file_name}, as an attachment <name>-<version>-{file_name}"),
    )


_serve_file(FOLDED_FILE, "folded_model", "The folded ONNX model, as served.")
_serve_file(
    UNFOLDED_FILE,
    "unfolded_model",
    "The unfolded ONNX export the folded one was verified against.",
)


@router.get(
    "/v1/models/{name}/versions/{version}/model.{precision}.onnx",
    **_onnx_file("a precision variant's model.onnx, as an attachment"),
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
