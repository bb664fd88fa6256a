"""TensorFlow Serving's REST API: status, metadata, predict."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.core.catalog import VersionEntry
from service.errors import InvalidInput
from service.http_api import bodies
from service.http_api.bodies import BodyCodec
from service.http_api.deps import ApiAuth, DataPlaneDep, JSONResponse
from service.protocols import tfserving

router = APIRouter(tags=["TensorFlow Serving REST"], dependencies=[ApiAuth])


@router.get("/v1/models/{name}")
async def model_status(name: str, dataplane: DataPlaneDep) -> JSONResponse:
    return _status(await dataplane.catalog.version_status(name))


@router.get("/v1/models/{name}/versions/{version}")
async def version_status(name: str, version: str, dataplane: DataPlaneDep) -> JSONResponse:
    return _status(await dataplane.catalog.version_status(name, version))


def _status(entries: list[VersionEntry]) -> JSONResponse:
    """TF Serving's ``{"model_version_status": [...]}``, plus the ``ready`` that KServe's v1
    protocol reads from the same URL (true when a version is AVAILABLE); TF Serving's
    clients read only ``model_version_status``."""
    statuses = [tfserving.version_status(entry) for entry in entries]
    ready = any(status["state"] == "AVAILABLE" for status in statuses)
    return JSONResponse({"model_version_status": statuses, "ready": ready})


@router.post("/v1/models/{name}:classify")
@router.post("/v1/models/{name}/versions/{version}:classify")
async def classify(name: str, dataplane: DataPlaneDep, version: str | None = None) -> None:
    dataplane.get(name, version)  # an unknown model is a 404, as for :predict
    raise InvalidInput(tfserving.NOT_CLASSIFIABLE.format(kind="classification", verb="classify"))


@router.post("/v1/models/{name}:regress")
@router.post("/v1/models/{name}/versions/{version}:regress")
async def regress(name: str, dataplane: DataPlaneDep, version: str | None = None) -> None:
    dataplane.get(name, version)
    raise InvalidInput(tfserving.NOT_CLASSIFIABLE.format(kind="regression", verb="regress"))


@router.post("/v1/models/{name}:explain")
@router.post("/v1/models/{name}/versions/{version}:explain")
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


@router.get("/v1/models/{name}/metadata")
@router.get("/v1/models/{name}/versions/{version}/metadata")
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
