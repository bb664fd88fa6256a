"""The model store: upload (fold and verify), list, delete; and compare."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from service import tfserving
from service.deps import AdminAuth, ApiAuth, DataPlaneDep, JSONResponse, json_body
from service.errors import InvalidInput

router = APIRouter(tags=["Model store"])


@router.post("/v1/models", status_code=201, dependencies=[AdminAuth])
async def upload(request: Request, dataplane: DataPlaneDep) -> JSONResponse:
    """multipart/form-data: ``file`` (a .keras or .h5 model), optional ``name``, optional
    ``calibration`` (.npy/.npz, as ``foldserve fold --recalibrate``: every BN's moving
    statistics are re-estimated on it before folding)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("upload must be multipart/form-data with a 'file' field")
    try:
        form = await request.form(max_files=2, max_fields=8)
    except Exception as error:  # Starlette's multipart errors have no common base
        raise InvalidInput(f"malformed multipart body: {error}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput("upload needs a 'file' field holding the model file")
        name = form.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidInput("form field 'name' must be text")
        calibration = form.get("calibration")
        if calibration is not None and not isinstance(calibration, UploadFile):
            raise InvalidInput("form field 'calibration' must be a .npy or .npz file")
        model_name, version, report = await dataplane.register(
            file.file,
            file.filename or "",
            name or None,
            calibration=None if calibration is None else (calibration.file, calibration.filename),
        )
    finally:
        await form.close()
    return JSONResponse({"name": model_name, "version": version, "report": report}, 201)


@router.get("/v1/models", dependencies=[ApiAuth])
async def list_models(dataplane: DataPlaneDep) -> JSONResponse:
    return JSONResponse({"models": dataplane.catalogue()})


@router.delete("/v1/models/{name}", dependencies=[AdminAuth])
@router.delete("/v1/models/{name}/versions/{version}", dependencies=[AdminAuth])
async def delete(name: str, dataplane: DataPlaneDep, version: str | None = None) -> JSONResponse:
    removed = await dataplane.delete(name, version)
    return JSONResponse({"name": name, "deleted_versions": removed})


@router.post("/v1/models/{name}:compare", dependencies=[ApiAuth])
@router.post("/v1/models/{name}/versions/{version}:compare", dependencies=[ApiAuth])
async def compare(
    name: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    """Body as for ``:predict``, plus optional ``"reference": "keras"``."""
    model = dataplane.get(name, version)
    body = await json_body(request)
    reference = body.pop("reference", None) if isinstance(body, dict) else None
    inputs, _ = tfserving.parse_request(body, model.inputs)
    result = await dataplane.compare(model, inputs, reference)
    return JSONResponse({"model_name": model.name, "model_version": str(model.version), **result})
