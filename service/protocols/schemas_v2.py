"""The Open Inference Protocol (KServe V2) REST bodies as schemas, after KServe's
``v2_datamodels.py``: the wire format of ``service.protocols.v2`` and ``routes.v2``.

Each class quotes the shape the protocol gives
(https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/); the
statistics follow Triton's statistics extension.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from service.protocols.codecs import V2_DATATYPES
from service.protocols.schemas import Schema
from service.protocols.schemas_tfserving import DEMO_ROW

Datatype = Literal[tuple(V2_DATATYPES)]  # type: ignore[valid-type]
Parameters = dict[str, Any]


class ServerMetadataResponse(Schema):
    """``{"name": $string, "version": $string, "extensions": [$string, ...]}``, plus the
    execution provider and the fold worker's confinement."""

    name: str
    version: str
    extensions: list[str]
    execution_provider: str
    confinement: dict[str, Any] = Field(description="what the fold worker is confined from")


class ServerLiveResponse(Schema):
    """``{"live": $bool}``."""

    live: bool


class ServerReadyResponse(Schema):
    """``{"ready": $bool}``."""

    ready: bool


class KServeV1LiveResponse(Schema):
    """KServe v1's ``GET /``: ``{"status": "alive"}``."""

    status: Literal["alive"]


class MetadataTensor(Schema):
    """``{"name": $string, "datatype": $string, "shape": [$number, ...]}``."""

    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 for a dimension of any size")


class ModelMetadataResponse(Schema):
    """``{"name": $string, "versions": [$string, ...] #optional, "platform": $string,
    "inputs": [$metadata_tensor, ...], "outputs": [$metadata_tensor, ...]}``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters


class ModelReadyResponse(Schema):
    """``{"name": $string, "version": $string, "ready": $bool}``."""

    name: str
    version: str
    ready: bool


class ConfigTensor(Schema):
    name: str
    data_type: str = Field(examples=["TYPE_FP32"])
    dims: list[int]


class DynamicBatching(Schema):
    """Triton's ``ModelDynamicBatching``, as far as foldserve's batcher has its settings."""

    preferred_batch_size: list[int]
    max_queue_delay_microseconds: int


class ModelConfigResponse(Schema):
    """Triton's model configuration, as much of it as an ONNX model on ONNX Runtime has.
    With ``max_batch_size`` > 0 the ``dims`` leave out the batch axis, as in Triton."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    dynamic_batching: DynamicBatching | SkipJsonSchema[None] = None


class RepositoryIndexEntry(Schema):
    """``{"name": $string, "version": $string, "state": $string, "reason": $string}``."""

    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str | SkipJsonSchema[None] = None


class DurationStatistic(Schema):
    """``$duration_stat = {"count": $number, "ns": $number}``."""

    count: int
    ns: int


class InferenceStatistics(Schema):
    success: DurationStatistic
    fail: DurationStatistic
    queue: DurationStatistic
    compute_input: DurationStatistic
    compute_infer: DurationStatistic
    compute_output: DurationStatistic


class BatchStatistics(Schema):
    batch_size: int
    compute_input: DurationStatistic
    compute_infer: DurationStatistic
    compute_output: DurationStatistic


class ModelStatistics(Schema):
    name: str
    version: str
    last_inference: int = Field(description="milliseconds since the epoch; 0 before any")
    inference_count: int
    execution_count: int
    inference_stats: InferenceStatistics
    batch_stats: list[BatchStatistics]


class StatisticsResponse(Schema):
    """``{"model_stats": [{"name", "version", "last_inference", "inference_count",
    "execution_count", "inference_stats": {...}, "batch_stats": [...]}]}``."""

    model_stats: list[ModelStatistics]


class RequestInput(Schema):
    """``{"name": $string, "shape": [$number, ...], "datatype": $string,
    "parameters": $parameters #optional, "data": $tensor_data}``; with the binary
    extension, ``"parameters": {"binary_data_size": n}`` instead of ``data``."""

    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Datatype
    parameters: Parameters | SkipJsonSchema[None] = None
    data: Any = Field(None, description="flat or nested list of numbers")


class RequestOutput(Schema):
    """``{"name": $string, "parameters": $parameters #optional}``; ``"parameters":
    {"binary_data": true}`` asks for it in binary."""

    name: str
    parameters: Parameters | SkipJsonSchema[None] = None


class InferenceRequest(Schema):
    """``{"id": $string #optional, "parameters": $parameters #optional,
    "inputs": [$request_input, ...], "outputs": [$request_output, ...] #optional}``."""

    example: ClassVar[Any] = {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": DEMO_ROW}]
    }

    id: str | SkipJsonSchema[None] = None
    parameters: Parameters | SkipJsonSchema[None] = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | SkipJsonSchema[None] = None


class ResponseOutput(Schema):
    """``{"name": $string, "shape": [$number, ...], "datatype": $string,
    "parameters": $parameters #optional, "data": $tensor_data}``."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | SkipJsonSchema[None] = None
    data: list[Any] | SkipJsonSchema[None] = Field(
        None, description="row-major, flat; absent when the output is sent in binary"
    )


class InferenceResponse(Schema):
    """``{"model_name": $string, "model_version": $string #optional, "id": $string,
    "parameters": $parameters #optional, "outputs": [$response_output, ...]}``."""

    model_name: str
    model_version: str
    id: str | SkipJsonSchema[None] = None
    parameters: Parameters | SkipJsonSchema[None] = None
    outputs: list[ResponseOutput]
