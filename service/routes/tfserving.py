"""TensorFlow Serving's REST API: status, metadata, predict."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service import bodies, tfserving
from service.bodies import BodyCodec
from service.deps import ApiAuth, DataPlaneDep, JSONResponse

router = APIRouter(tags=["TensorFlow Serving REST"], dependencies=[ApiAuth])


@router.get("/v1/models/{name}")
async def model_status(name: str, dataplane: DataPlaneDep) -> JSONResponse:
    return JSONResponse({"model_version_status": await dataplane.version_status(name)})


@router.get("/v1/models/{name}/versions/{version}")
async def version_status(name: str, version: str, dataplane: DataPlaneDep) -> JSONResponse:
    statuses = await dataplane.version_status(name, version)
    return JSONResponse({"model_version_status": statuses})


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
