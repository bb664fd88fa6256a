"""Tensors in and out of ``ModelInferRequest`` / ``ModelInferResponse``.

From the KServe V2 gRPC spec::

    message InferInputTensor {
      string name = 1; string datatype = 2; repeated int64 shape = 3;
      map<string, InferParameter> parameters = 4; InferTensorContents contents = 5; }
    message ModelInferRequest { ...; repeated InferInputTensor inputs = 5;
      repeated InferRequestedOutputTensor outputs = 6;
      repeated bytes raw_input_contents = 7; }

"raw_input_contents": when used, it holds every input, in order, as little-endian
bytes, and the ``contents`` field of every input is empty. Outputs come back the way
the inputs came: raw in ``raw_output_contents`` when the inputs were raw, else in the
typed ``contents`` field (FP16 has none: it is always raw).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.protocols.codecs import (
    array_from_bytes,
    array_from_json,
    check_shape,
    numpy_from_v2,
    v2_datatype,
)
from service.runtime.sessions import TensorMeta

# The InferTensorContents field holding each datatype.
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def parse_inputs(request: Any, expected: list[TensorMeta]) -> dict[str, np.ndarray]:
    if not request.inputs:
        raise InvalidInput("'inputs' must hold at least one tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs"
        )
    dtypes = {meta.name: meta.dtype for meta in expected}
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        what = f"input '{name}'"
        if name in inputs:
            raise InvalidInput(f"{what} is given twice")
        shape = list(tensor.shape)
        check_shape(shape, what)
        dtype = numpy_from_v2(tensor.datatype, what)
        if name in dtypes and dtype != dtypes[name]:  # unknown names: the dataplane says so
            raise InvalidInput(
                f"{what} has datatype {tensor.datatype}; model expects {v2_datatype(dtypes[name])}"
            )
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"{what} has contents although raw_input_contents is used")
            inputs[name] = array_from_bytes(raw[index], dtype, shape, what)
        else:
            inputs[name] = _from_contents(tensor, dtype, shape, what)
    return inputs


def _from_contents(tensor: Any, dtype: np.dtype, shape: list[int], what: str) -> np.ndarray:
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"{what}: {tensor.datatype} can only be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    count = check_shape(shape, what)
    if len(values) != count:
        raise InvalidInput(
            f"{what} has {len(values)} values in contents.{field}; shape {shape} needs {count}"
        )
    return array_from_json(list(values), dtype, what).reshape(shape)


def render_outputs(response: Any, outputs: dict[str, np.ndarray], raw: bool) -> None:
    """Fill ``response.outputs``, and ``raw_output_contents`` when ``raw`` or when an
    output has no typed field (then every output is raw, as the spec wants them all)."""
    datatypes = {name: v2_datatype(array.dtype) for name, array in outputs.items()}
    raw = raw or any(datatype not in CONTENTS_FIELDS for datatype in datatypes.values())
    for name, array in outputs.items():
        tensor = response.outputs.add(name=name, datatype=datatypes[name], shape=array.shape)
        if raw:
            little_endian = array.astype(array.dtype.newbyteorder("<"), copy=False)
            response.raw_output_contents.append(np.ascontiguousarray(little_endian).tobytes())
        else:
            field = CONTENTS_FIELDS[datatypes[name]]
            getattr(tensor.contents, field).extend(array.ravel().tolist())
