"""The model store: upload (fold and verify), list, delete; and compare."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from service.core.compare import DEFAULT_COMPARE_REPEATS, MAX_COMPARE_REPEATS
from service.errors import InsufficientStorage, InvalidInput, ServingError
from service.http_api.deps import AdminAuth, ApiAuth, DataPlaneDep, JSONResponse, json_body
from service.http_api.routing import per_version
from service.jobs.store import public
from service.jobs.submit import no_space
from service.protocols import tfserving
from service.protocols.schemas import request_body
from service.protocols.schemas_models import (
    FALSE_WORDS,
    TRUE_WORDS,
    CompareRequest,
    CompareResponse,
    Deleted,
    Job,
    ModelList,
    Uploaded,
    UploadForm,
)

router = APIRouter(tags=["Model store"])
versioned = per_version(router)

PREFER_WAIT = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
    "description": "wait=N (RFC 7240): wait up to N seconds for the job before answering",
}


@router.post(
    "/v1/models",
    status_code=202,
    dependencies=[AdminAuth],
    response_model=Job,
    response_description="the upload job, queued (or still running after Prefer: wait=N)",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}, "description": "the job"}}},
        201: {
            "model": Uploaded,
            "description": "with ?wait=true or Prefer: wait=N: the job finished in time",
        },
    },
    openapi_extra={**request_body(UploadForm, "multipart/form-data"), "parameters": [PREFER_WAIT]},
)
async def upload(request: Request, dataplane: DataPlaneDep, wait: bool = False) -> JSONResponse:
    """multipart/form-data: ``file`` (a .keras, .h5 or .onnx model, or a TensorFlow
    SavedModel as .zip or .tar.gz), optional ``name``, optional ``signature`` (a
    SavedModel's serving signature, default ``serving_default``), optional
    ``probe`` (a .npy or .npz of inputs the fold is verified on), optional
    ``recalibrate`` (.npy/.npz, as ``foldserve fold --recalibrate``: every BN's moving
    statistics are re-estimated on it before folding), optional ``precision``
    (``fp16``, ``int8`` or ``fp16,int8``: variants made beside the folded model, each
    served as ``<name>-<precision>``), optional ``calibration`` (.npy/.npz rows of the
    model's inputs that calibrate int8 and judge the variants), optional ``equalize``
    (``true``: cross-layer equalization before int8).

    Answers 202 with the upload job (``Location: /v1/jobs/{id}``) at once; with
    ``?wait=true``, or ``Prefer: wait=N`` (seconds), 201 ``{"name", "version",
    "report"}`` once the job is done, or the error the job failed with."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("upload must be multipart/form-data with a 'file' field")
    async with dataplane.uploads.admitted(_declared_length(request)):
        job = await _receive_and_submit(request, dataplane)
    waited = await dataplane.uploads.wait(job["id"], _wait_seconds(request, wait))
    if waited is not None and waited["state"] == "done":
        body = {"name": waited["name"], "version": waited["version"], "report": waited["report"]}
        return JSONResponse(body, 201)
    location = f"/v1/jobs/{job['id']}"
    return JSONResponse(public(waited or job), 202, headers={"Location": location})


async def _receive_and_submit(request: Request, dataplane: Any) -> dict[str, Any]:
    """The multipart body received, checked and submitted: the new job."""
    try:
        form = await request.form(max_files=4, max_fields=10)
    except (ServingError, ClientDisconnect):  # over the size limit (413), or gone
        raise
    except OSError as error:  # the parts are buffered in temporary files
        if no_space(error):
            raise InsufficientStorage(
                "the upload could not be buffered: the server's temporary folder is full"
            ) from None
        raise InvalidInput(f"the upload could not be received: {error.strerror}") from None
    except Exception as error:  # Starlette's multipart errors have no common base
        raise InvalidInput(f"malformed multipart body: {error}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput("upload needs a 'file' field holding the model file")
        name = _field(form, "name", str, "text")
        probe = _field(form, "probe", UploadFile, "a .npy or .npz file")
        signature = _field(form, "signature", str, "text")
        calibration = _field(form, "calibration", UploadFile, "a .npy or .npz file")
        recalibrate = _field(form, "recalibrate", UploadFile, "a .npy or .npz file")
        precision = _field(form, "precision", str, "text, e.g. fp16,int8")
        equalize = _flag(form.get("equalize"), "equalize")
        job = await dataplane.uploads.submit(
            file.file,
            file.filename or "",
            name or None,
            probe=None if probe is None else (probe.file, probe.filename or ""),
            calibration=None if calibration is None else (calibration.file, calibration.filename),
            signature=signature or None,
            recalibrate=None if recalibrate is None else (recalibrate.file, recalibrate.filename),
            precision=precision,
            equalize=equalize,
        )
    finally:
        await form.close()
    return job


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _field(form: Any, name: str, kind: type, what: str) -> Any:
    """An optional form field of ``kind`` (None when absent or left empty)."""
    field = _present(form.get(name))
    if field is not None and not isinstance(field, kind):
        raise InvalidInput(f"form field '{name}' must be {what}")
    return field


def _flag(field: Any, name: str) -> bool:
    """A true/false form field (absent or empty: false)."""
    if field is None or field == "":
        return False
    if isinstance(field, str) and field.strip().lower() in TRUE_WORDS:
        return True
    if isinstance(field, str) and field.strip().lower() in FALSE_WORDS:
        return False
    raise InvalidInput(f"form field '{name}' must be true or false")


def _present(field: Any) -> Any:
    """A form field, or None when it was left empty: browsers and Swagger UI send an
    optional file input with nothing chosen as an empty string (or an unnamed empty file)."""
    if field == "" or (isinstance(field, UploadFile) and not field.filename and not field.size):
        return None
    return field


def _wait_seconds(request: Request, wait: bool) -> float | None:
    """How long the client asked to wait for the job: ``?wait=true`` until it ends
    (None), ``Prefer: wait=N`` (RFC 7240) N seconds; else not at all (0)."""
    if wait:
        return None
    for preference in request.headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = preference.strip().partition("=")
        if key.strip().lower() == "wait":
            try:
                return max(0.0, float(value.strip().strip('"')))
            except ValueError:
                raise InvalidInput(f"'Prefer: wait={value}' needs a number of seconds") from None
    return 0.0


@router.get("/v1/models", dependencies=[ApiAuth], response_model=ModelList)
async def list_models(dataplane: DataPlaneDep) -> JSONResponse:
    return JSONResponse({"models": await dataplane.catalog.catalogue()})


@versioned("DELETE", "/v1/models/{name}", dependencies=[AdminAuth], response_model=Deleted)
async def delete(name: str, dataplane: DataPlaneDep, version: str | None = None) -> JSONResponse:
    removed = await dataplane.delete(name, version)
    return JSONResponse({"name": name, "deleted_versions": removed})


@versioned(
    "POST",
    "/v1/models/{name}:compare",
    dependencies=[ApiAuth],
    response_model=CompareResponse,
    openapi_extra=request_body(CompareRequest),
)
async def compare(
    name: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    """Body as for ``:predict``, plus optional ``"reference": "source"`` (the stored Keras
    model or SavedModel, run in the fold worker; ``"keras"`` is accepted too), ``"repeats"``
    (timed rounds, default 10), ``"return_outputs"`` (default true) and ``"variants"``
    (true: also each precision variant of the version, judged against float32 folded and
    timed in the same rounds)."""
    model = dataplane.get(name, version)
    body = await json_body(request)
    options = {}
    if isinstance(body, dict):
        options = {
            key: body.pop(key)
            for key in ("reference", "repeats", "return_outputs", "variants")
            if key in body
        }
    repeats = options.get("repeats", DEFAULT_COMPARE_REPEATS)
    if type(repeats) is not int or not 1 <= repeats <= MAX_COMPARE_REPEATS:
        raise InvalidInput(
            f"'repeats' must be an integer from 1 to {MAX_COMPARE_REPEATS}, got {repeats!r}"
        )
    return_outputs = options.get("return_outputs", True)
    if not isinstance(return_outputs, bool):
        raise InvalidInput(f"'return_outputs' must be true or false, got {return_outputs!r}")
    variants = options.get("variants", False)
    if not isinstance(variants, bool):
        raise InvalidInput(f"'variants' must be true or false, got {variants!r}")
    inputs, _ = tfserving.parse_request(body, model.inputs)
    result = await dataplane.comparison.compare(
        model,
        inputs,
        options.get("reference"),
        repeats=repeats,
        return_outputs=return_outputs,
        variants=variants,
    )
    return JSONResponse({"model_name": model.name, "model_version": str(model.version), **result})
