"""TensorFlow Serving's REST API: status, metadata, predict."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.core.catalog import VersionEntry
from service.errors import InvalidInput
from service.http_api import bodies
from service.http_api.bodies import BodyCodec
from service.http_api.deps import ApiAuth, DataPlaneDep, JSONResponse
from service.http_api.routing import per_version
from service.protocols import tfserving
from service.protocols.schemas import request_body
from service.protocols.schemas_tfserving import (
    ExamplesRequest,
    MetadataResponse,
    ModelStatusResponse,
)

router = APIRouter(tags=["TensorFlow Serving REST"], dependencies=[ApiAuth])
versioned = per_version(router)


@router.get("/v1/models/{name}", response_model=ModelStatusResponse)
async def model_status(name: str, dataplane: DataPlaneDep) -> JSONResponse:
    return _status(await dataplane.catalog.version_status(name))


@router.get("/v1/models/{name}/versions/{version}", response_model=ModelStatusResponse)
async def version_status(name: str, version: str, dataplane: DataPlaneDep) -> JSONResponse:
    return _status(await dataplane.catalog.version_status(name, version))


def _status(entries: list[VersionEntry]) -> JSONResponse:
    """TF Serving's ``{"model_version_status": [...]}``, plus the ``ready`` that KServe's v1
    protocol reads from the same URL (true when a version is AVAILABLE); TF Serving's
    clients read only ``model_version_status``."""
    statuses = [tfserving.version_status(entry) for entry in entries]
    ready = any(status["state"] == "AVAILABLE" for status in statuses)
    return JSONResponse({"model_version_status": statuses, "ready": ready})


REFUSED = {
    "openapi_extra": request_body(ExamplesRequest),
    "response_description": "never sent: the 400 names ':predict' instead",
}


@versioned("POST", "/v1/models/{name}:classify", **REFUSED)
async def classify(name: str, dataplane: DataPlaneDep, version: str | None = None) -> None:
    dataplane.get(name, version)  # an unknown model is a 404, as for :predict
    raise InvalidInput(tfserving.NOT_CLASSIFIABLE.format(kind="classification", verb="classify"))


@versioned("POST", "/v1/models/{name}:regress", **REFUSED)
async def regress(name: str, dataplane: DataPlaneDep, version: str | None = None) -> None:
    dataplane.get(name, version)
    raise InvalidInput(tfserving.NOT_CLASSIFIABLE.format(kind="regression", verb="regress"))


@versioned("POST", "/v1/models/{name}:explain")
async def explain(name: str, dataplane: DataPlaneDep, version: str | None = None) -> None:
    """KServe v1's ``:explain``: foldserve runs no explainer beside its models."""
    dataplane.get(name, version)
    raise InvalidInput(
        "':explain' needs an explainer, and foldserve serves none: send the rows to ':predict'"
    )


@router.get("/v1/models/{name}/labels/{label}")
@router.get("/v1/models/{name}/labels/{label}/metadata")
@router.post("/v1/models/{name}/labels/{label}:predict")
async def labelled(name: str, label: str, dataplane: DataPlaneDep) -> None:
    """TF Serving's version labels: foldserve has none (TF Serving answers an unknown
    label with INVALID_ARGUMENT, 400, too)."""
    dataplane.get(name)
    raise InvalidInput(
        f"unrecognized version label '{label[:64]}': foldserve has no version labels; "
        f"name the version (/v1/models/{name}/versions/<n>) or leave it out for the latest"
    )


@versioned("GET", "/v1/models/{name}/metadata", response_model=MetadataResponse)
async def metadata(name: str, dataplane: DataPlaneDep, version: str | None = None) -> JSONResponse:
    model = dataplane.get(name, version)
    return JSONResponse(
        {
            "model_spec": {
                "name": model.name,
                "signature_name": "",
                "version": str(model.version),
            },
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        tfserving.SIGNATURE: {
                            "inputs": tfserving.signature(model.inputs),
                            "outputs": tfserving.signature(model.outputs),
                            "method_name": "tensorflow/serving/predict",
                        }
                    }
                },
                "execution_provider": model.folded.provider,
            },
        }
    )


async def predict(
    name: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> JSONResponse:
    model = dataplane.get(name, version)
    codec: BodyCodec = request.app.state.bodies
    inputs, row_format = await codec.decode(
        request, bodies.decode_tfserving, bodies.specs(model.inputs)
    )
    outputs = await dataplane.infer(model, inputs)
    content = await codec.run(
        bodies.encode_tfserving, outputs, row_format, size=bodies.output_bytes(outputs)
    )
    return Response(content, media_type="application/json")
