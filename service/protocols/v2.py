"""The Open Inference Protocol (KServe V2) inference request and response, with the
binary tensor data extension.

Request (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/)::

    {"id": $string #optional, "parameters": $parameters #optional,
     "inputs": [{"name": $string, "shape": [$number, ...], "datatype": $string,
                 "parameters": $parameters #optional, "data": $tensor_data}, ...],
     "outputs": [{"name": $string, "parameters": $parameters #optional}, ...] #optional}

Binary extension: the JSON is followed by raw tensor bytes; the HTTP header
``Inference-Header-Content-Length`` gives the JSON's length, an input with
``"parameters": {"binary_data_size": n}`` takes the next ``n`` bytes instead of
``data``; an output asked for with ``"parameters": {"binary_data": true}`` (or
every output, with the request parameter ``"binary_data_output": true``) is
returned the same way.

Response::

    {"model_name": $string, "model_version": $string, "id": $string,
     "outputs": [{"name": $string, "shape": [$number, ...], "datatype": $string,
                  "parameters": $parameters #optional, "data": $tensor_data}, ...]}
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.errors import InvalidInput, TooLarge
from service.protocols.codecs import (
    array_from_bytes,
    array_from_json,
    check_shape,
    loads_json,
    numpy_from_v2,
    to_json,
    v2_datatype,
)

if TYPE_CHECKING:
    from service.runtime.sessions import TensorMeta


@dataclass
class V2Request:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None
    binary_outputs: set[str]


def parse_request(body: Any, binary: bytes, expected: list[TensorMeta]) -> V2Request:
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    dtypes = {meta.name: meta.dtype for meta in expected}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(f"input {index} must be an object with a 'name'")
        name = tensor["name"]
        what = f"input '{name}'"
        if name in inputs:
            raise InvalidInput(f"{what} is given twice")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
        ):
            raise InvalidInput(f"{what} needs 'shape', a list of non-negative integers")
        count = check_shape(shape, what)
        dtype = numpy_from_v2(tensor.get("datatype"), what)
        if name in dtypes and dtype != dtypes[name]:  # V2 datatypes match exactly (as Triton)
            raise InvalidInput(
                f"{what} has datatype {tensor.get('datatype')}; model expects "
                f"{v2_datatype(dtypes[name])}"
            )
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"{what} has binary_data_size {size!r} beyond the body")
            array = array_from_bytes(binary[offset : offset + size], dtype, shape, what)
            offset += size
        else:
            if "data" not in tensor:
                raise InvalidInput(f"{what} has neither 'data' nor binary_data_size")
            array = array_from_json(tensor["data"], dtype, what)
            if array.size != count:
                raise InvalidInput(f"{what} has {array.size} values; shape {shape} needs {count}")
            array = array.reshape(shape)
        inputs[name] = array
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by inputs")
    outputs, binary_outputs = _requested_outputs(body)
    request_id = body.get("id")
    return V2Request(
        str(request_id) if request_id is not None else None, inputs, outputs, binary_outputs
    )


def _requested_outputs(body: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    parameters = body.get("parameters") or {}
    all_binary = isinstance(parameters, dict) and bool(parameters.get("binary_data_output"))
    raw = body.get("outputs")
    if raw is None:
        return None, {"*"} if all_binary else set()
    if not isinstance(raw, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in raw
    ):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    names = [item["name"] for item in raw]
    binary = set()
    for item in raw:
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"'parameters' of output '{item['name']}' must be an object")
        refuse_classification(item["name"], parameters.get("classification"))
        if all_binary or parameters.get("binary_data", False):
            binary.add(item["name"])
    return names, binary


def refuse_classification(output: str, class_count: Any) -> None:
    """Triton's classification extension (``InferRequestedOutput(class_count=k)`` sends
    ``"parameters": {"classification": k}``) is not served: refused rather than ignored,
    so that a client expecting top-k label strings does not get raw scores."""
    if class_count:
        raise InvalidInput(
            f"output '{output}' asks for Triton's classification extension (class_count "
            f"{class_count!r}), which foldserve does not serve: ask for the raw output and take "
            "the top classes from it"
        )


def render_response(
    model_name: str, version: int, request: V2Request, outputs: dict[str, np.ndarray]
) -> tuple[dict[str, Any], list[bytes]]:
    """The response JSON and, in order, the binary chunks that follow it."""
    chunks: list[bytes] = []
    rendered = []
    for name, array in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(array.dtype),
            "shape": list(array.shape),
        }
        if name in request.binary_outputs or "*" in request.binary_outputs:
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        rendered.append(entry)
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(version),
        "outputs": rendered,
    }
    if request.id is not None:
        response["id"] = request.id
    return response, chunks


EXTENSIONS = ["binary_tensor_data", "statistics"]
"""The extensions served. The repository index is, but not the rest of the
model_repository extension (load/unload): every model in the store is loaded."""

INDEX_STATES = {"AVAILABLE": "READY", "LOADING": "LOADING", "UNAVAILABLE": "UNAVAILABLE"}
"""The catalog's version states as the repository index names them."""


def tensor_metadata(metas: list[TensorMeta]) -> list[dict[str, Any]]:
    return [
        {"name": meta.name, "datatype": v2_datatype(meta.dtype), "shape": list(meta.shape)}
        for meta in metas
    ]


HEADER_LENGTH = "Inference-Header-Content-Length"


def decode_request(
    body: bytes, headers: Mapping[str, str], limit: int, expected: Sequence[TensorMeta]
) -> V2Request:
    """A whole V2 request off the wire: ``Content-Encoding`` undone (bounded by
    ``limit``), the JSON header split from the binary tensor data at
    ``Inference-Header-Content-Length``, and parsed."""
    body = decompress(body, headers.get("content-encoding"), limit)
    header_length = headers.get(HEADER_LENGTH)
    if header_length is None:
        header, binary = body, b""
    else:
        digits = header_length.isascii() and header_length.isdigit() and len(header_length) < 19
        if not digits or int(header_length) > len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} does not fit the body")
        header, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        document = loads_json(header) if header else None
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if document is None:
        raise InvalidInput("request body is empty; expected JSON")
    return parse_request(document, binary, expected)


def encode_response(
    model_name: str, version: int, request: V2Request, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers: plain JSON, or JSON followed by the
    binary outputs with ``Inference-Header-Content-Length``."""
    response, chunks = render_response(model_name, version, request, outputs)
    json_part = to_json(response)
    if not chunks:
        return json_part, {}
    return json_part + b"".join(chunks), {HEADER_LENGTH: str(len(json_part))}


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate``, refusing more than ``limit`` bytes out."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}")
    decoder = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidInput(f"body is not valid {encoding}: {error}") from None
    if len(out) > limit:
        raise TooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not decoder.eof:
        raise InvalidInput(f"body is not valid {encoding}: truncated stream")
    return out


def model_config(model: Any) -> dict[str, Any]:
    """Triton's model configuration of a loaded version (``GET .../config``, gRPC
    ``ModelConfig``), in Triton's meaning of its fields::

        {"name": $string, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
         "max_batch_size": $number,
         "input": [{"name": $string, "data_type": "TYPE_FP32", "dims": [$number, ...]}],
         "output": [...],
         "dynamic_batching": {"preferred_batch_size": [], "max_queue_delay_microseconds": $number}}

    A version served with dynamic batching whose inputs and outputs all have a dynamic
    first axis reports the batcher's ``max_batch_size``, a ``dynamic_batching``
    section, and ``dims`` without the batch axis (Triton's rule: when
    ``max_batch_size`` > 0 the batch dimension is implicit). Any other reports
    ``max_batch_size`` 0 and the full dims, -1 for a dynamic axis.
    """
    policy = model.policy
    tensors = [*model.inputs, *model.outputs]
    batched = policy.enabled and all(meta.shape and meta.shape[0] == -1 for meta in tensors)
    skip = 1 if batched else 0

    def dims(metas: list[TensorMeta]) -> list[dict[str, Any]]:
        return [
            {
                "name": m.name,
                "data_type": f"TYPE_{v2_datatype(m.dtype)}",
                "dims": list(m.shape[skip:]),
            }
            for m in metas
        ]

    config = {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": policy.max_batch_size if batched else 0,
        "input": dims(model.inputs),
        "output": dims(model.outputs),
    }
    if batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": policy.max_queue_delay_us,
        }
    return config
