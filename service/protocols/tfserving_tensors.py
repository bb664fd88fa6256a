"""numpy arrays in and out of TensorFlow's ``TensorProto`` (the tensors of TF Serving's gRPC API).

From tensorflow/core/framework/tensor.proto::

    message TensorProto {
      DataType dtype = 1;
      TensorShapeProto tensor_shape = 2;    // dim { size: 2 } dim { size: 64 }
      bytes tensor_content = 4;             // the values in host byte order, row-major
      repeated float float_val = 5; ...     // or the values in the dtype's typed field
    }

"Only one of the representations below is set": the values come either as raw bytes in
``tensor_content`` or in the typed field of the dtype; "if the typed field holds a single
value, the tensor is filled with it". Outputs are written as TF Serving writes them by
default, in the typed field (so ``response.outputs[name].float_val`` reads them), and
``tf.make_ndarray`` reads either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidInput, TooLarge
from service.protocols.codecs import array_from_bytes, check_shape, tf_datatype
from service.protocols.tfserving_protos import DATA_TYPES, TensorProto
from service.runtime.sessions import TensorMeta

NUMPY_TYPES: dict[str, np.dtype] = {
    "DT_BOOL": np.dtype(np.bool_),
    "DT_UINT8": np.dtype(np.uint8),
    "DT_UINT16": np.dtype(np.uint16),
    "DT_UINT32": np.dtype(np.uint32),
    "DT_UINT64": np.dtype(np.uint64),
    "DT_INT8": np.dtype(np.int8),
    "DT_INT16": np.dtype(np.int16),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_HALF": np.dtype(np.float16),
    "DT_FLOAT": np.dtype(np.float32),
    "DT_DOUBLE": np.dtype(np.float64),
}

# The TensorProto field holding each dtype's values (tensor.proto's comments).
VALUE_FIELDS: dict[str, str] = {
    "DT_BOOL": "bool_val",
    "DT_UINT8": "int_val",
    "DT_UINT16": "int_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_INT8": "int_val",
    "DT_INT16": "int_val",
    "DT_INT32": "int_val",
    "DT_INT64": "int64_val",
    "DT_HALF": "half_val",
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
}


def data_type(dtype: np.dtype) -> int:
    """The ``tensorflow.DataType`` number of a numpy dtype."""
    return DATA_TYPES.values_by_name[tf_datatype(dtype)].number


def shape_proto(shape: Any, message: Any) -> None:
    """Fill a ``TensorShapeProto`` (``message``) with ``shape``; -1 is an unknown size."""
    for size in shape:
        message.dim.add(size=int(size))


def parse_inputs(tensors: Any, expected: list[TensorMeta], max_bytes: int) -> dict[str, np.ndarray]:
    """The named arrays of ``PredictRequest.inputs`` (a map of TensorProto). A tensor
    filled from one value may be at most ``max_bytes`` (the largest message accepted):
    a few bytes must not become gigabytes."""
    if not tensors:
        raise InvalidInput("'inputs' must hold at least one tensor")
    dtypes = {meta.name: meta.dtype for meta in expected}
    return {name: to_array(tensors[name], dtypes.get(name), name, max_bytes) for name in tensors}


def to_array(tensor: Any, expected: np.dtype | None, name: str, max_bytes: int) -> np.ndarray:
    what = f"input '{name}'"
    type_name = _type_name(tensor.dtype)
    dtype = NUMPY_TYPES.get(type_name)
    if dtype is None:
        served = ", ".join(NUMPY_TYPES)
        raise InvalidInput(
            f"{what} has dtype {type_name}; only numeric tensors are served ({served})"
        )
    if expected is not None and dtype != expected:  # unknown names: the dataplane says so
        raise InvalidInput(f"{what} has dtype {type_name}; model expects {tf_datatype(expected)}")
    if tensor.tensor_shape.unknown_rank:
        raise InvalidInput(f"{what} has tensor_shape.unknown_rank set; give its dimensions")
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    count = check_shape(shape, what)
    if tensor.tensor_content:
        return array_from_bytes(tensor.tensor_content, dtype, shape, what)
    field = VALUE_FIELDS[type_name]
    values = getattr(tensor, field)
    if len(values) not in (count, 1) or (len(values) == 1 and count == 0):
        raise InvalidInput(
            f"{what} has {len(values)} values in {field}; shape {shape} needs {count} "
            "(or one, to fill it)"
        )
    if type_name == "DT_HALF":
        array = np.asarray(values, dtype=np.int64).astype(np.uint16).view(np.float16)
    else:
        array = _typed(values, dtype, what)
    if len(values) == 1:
        if count * dtype.itemsize > max_bytes:
            raise TooLarge(
                f"{what} of shape {shape} filled from one value would take "
                f"{count * dtype.itemsize} bytes; at most {max_bytes} are accepted "
                "(FOLDSERVE_MAX_REQUEST_BYTES)"
            )
        return np.full(shape, array[0], dtype=dtype)
    return array.reshape(shape)


def _typed(values: Any, dtype: np.dtype, what: str) -> np.ndarray:
    if dtype.kind in "iu" and dtype.itemsize < 4:  # carried in int_val: check the range
        wide = np.asarray(values, dtype=np.int64)
        limits = np.iinfo(dtype)
        if wide.size and (wide.min() < limits.min or wide.max() > limits.max):
            raise InvalidInput(f"{what} has values outside the range of {dtype.name}")
        return wide.astype(dtype)
    return np.asarray(values, dtype=dtype)


def _type_name(number: int) -> str:
    value = DATA_TYPES.values_by_number.get(number)
    return value.name if value is not None else f"DataType {number}"


def to_proto(array: np.ndarray) -> Any:
    """A ``TensorProto`` holding ``array`` in its dtype's typed field."""
    type_name = tf_datatype(array.dtype)
    tensor = TensorProto(dtype=data_type(array.dtype))
    shape_proto(array.shape, tensor.tensor_shape)
    values = getattr(tensor, VALUE_FIELDS[type_name])
    flat = array.ravel()
    if type_name == "DT_HALF":
        values.extend(flat.view(np.uint16).tolist())
    else:
        values.extend(flat.tolist())
    return tensor
