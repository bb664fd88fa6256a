"""TensorFlow Serving's REST bodies as schemas
(https://www.tensorflow.org/tfx/serving/api_rest), the wire format of
``service.protocols.tfserving`` and ``routes.tfserving``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from service.errors import ERROR_CODES
from service.protocols.schemas import Schema
from service.protocols.tfserving import SIGNATURE

DEMO_ROW = [0.0] * 64
"""What Swagger UI prefills: one row of the demo model (digits: 64 pixels)."""


class PredictRequest(Schema):
    """``{"signature_name": <string>, "instances": <value>|<(nested)list>|<list-of-objects>}``
    (row format) or ``{"signature_name": <string>, "inputs": <value>|<(nested)list>|<object>}``
    (columnar format)."""

    example: ClassVar[Any] = {"instances": [DEMO_ROW]}

    signature_name: str = Field(SIGNATURE, description="the one signature, serving_default")
    instances: list[Any] | SkipJsonSchema[None] = Field(
        None, description="row format: one entry per row (an object of named inputs per row)"
    )
    inputs: Any = Field(None, description="columnar format: a tensor, or an object of tensors")


class PredictResponse(Schema):
    """``{"predictions": [...]}`` for the row format (a list of objects
    ``{output_name: value}`` when the model has several outputs);
    ``{"outputs": value | {output_name: value}}`` for the columnar format."""

    predictions: list[Any] | SkipJsonSchema[None] = Field(None, description="row format")
    outputs: Any = Field(None, description="columnar format")


class VersionStatus(Schema):
    """``{"error_code": <canonical code name>, "error_message": <string>}``."""

    error_code: Literal[("OK", "UNKNOWN", *sorted(set(ERROR_CODES.values())))]
    error_message: str


class ModelVersionStatus(Schema):
    """One entry of ``model_version_status``: ``{"version", "state", "status"}``."""

    version: str
    state: str = Field(description="AVAILABLE, LOADING (an upload folding) or END")
    status: VersionStatus


class ModelStatusResponse(Schema):
    """GetModelStatus: ``{"model_version_status": [...]}``, plus the ``ready`` KServe's v1
    protocol reads from the same URL."""

    model_version_status: list[ModelVersionStatus]
    ready: bool


class Dimension(Schema):
    size: str = Field(description="the dimension's size as a decimal string; -1 for any")
    name: str


class TensorShape(Schema):
    dim: list[Dimension]
    unknown_rank: bool


class TensorInfo(Schema):
    dtype: str = Field(examples=["DT_FLOAT"])
    tensor_shape: TensorShape
    name: str


class SignatureDef(Schema):
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: Literal["tensorflow/serving/predict"]


class SignatureDefMap(Schema):
    signature_def: dict[str, SignatureDef]


class Metadata(Schema):
    signature_def: SignatureDefMap
    execution_provider: str


class ModelSpec(Schema):
    name: str
    signature_name: str
    version: str


class MetadataResponse(Schema):
    """GetModelMetadata: ``{"model_spec": {...}, "metadata": {"signature_def":
    {"signature_def": {<name>: {"inputs", "outputs", "method_name"}}}}}``."""

    model_spec: ModelSpec
    metadata: Metadata


class ExamplesRequest(Schema):
    """``:classify`` and ``:regress``: ``{"signature_name": <string>, "context":
    {<feature>: <value>|<list>}, "examples": [{<feature>: <value>|<list>}, ...]}``.
    foldserve's models have no classification or regression signature: every such
    request is answered 400, naming ``:predict``."""

    signature_name: str = SIGNATURE
    context: dict[str, Any] | SkipJsonSchema[None] = None
    examples: list[dict[str, Any]]
