"""Tensors in and out of the two wire formats: numpy <-> JSON values, V2 datatypes."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput

V2_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_V2_NAMES = {dtype: name for name, dtype in V2_DATATYPES.items()}

_TF_DATATYPES = {
    np.dtype(np.bool_): "DT_BOOL",
    np.dtype(np.uint8): "DT_UINT8",
    np.dtype(np.uint16): "DT_UINT16",
    np.dtype(np.uint32): "DT_UINT32",
    np.dtype(np.uint64): "DT_UINT64",
    np.dtype(np.int8): "DT_INT8",
    np.dtype(np.int16): "DT_INT16",
    np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64",
    np.dtype(np.float16): "DT_HALF",
    np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.float64): "DT_DOUBLE",
}


def v2_datatype(dtype: np.dtype) -> str:
    return _V2_NAMES[np.dtype(dtype)]


def tf_datatype(dtype: np.dtype) -> str:
    return _TF_DATATYPES[np.dtype(dtype)]


def numpy_from_v2(datatype: Any, what: str) -> np.dtype:
    if datatype == "BYTES":
        raise InvalidInput(f"{what} has datatype BYTES; only numeric tensors are served")
    dtype = V2_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(
            f"{what} has unknown datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}"
        )
    return dtype


MAX_DIMENSION = 2**31 - 1
"""Largest size of one dimension of a request tensor: far above what fits in a request,
far below where shape arithmetic or numpy's own limits (2^63 bytes) come into play."""


def check_shape(shape: list[int], what: str) -> int:
    """The element count of ``shape`` (Python integers: no overflow), or InvalidInput when
    a dimension is negative or larger than ``MAX_DIMENSION``."""
    for dim in shape:
        if dim < 0 or dim > MAX_DIMENSION:
            raise InvalidInput(
                f"{what} has shape {shape}; each dimension must be between 0 and {MAX_DIMENSION}"
            )
    return math.prod(shape)


def array_from_json(values: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """A JSON value (number or nested lists) as an array of ``dtype``, or a clear error.

    Strings, nulls and objects are refused, even where numpy would convert them.
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} is ragged: its nested lists differ in length") from None
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"{what} has non-numeric values (or integers out of range)")
    try:
        with np.errstate(over="ignore"):
            converted = array.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{what} has values that are not {dtype.name}") from None
    if dtype.kind == "f" and array.dtype.kind == "f" and converted is not array:
        overflow = np.isinf(converted) & np.isfinite(array)
        if overflow.any():
            raise InvalidInput(
                f"{what} has values outside the range of {dtype.name} "
                f"(e.g. {array[overflow].flat[0]:g})"
            )
    return converted


def array_from_bytes(raw: bytes, dtype: np.dtype, shape: list[int], what: str) -> np.ndarray:
    expected = check_shape(shape, what) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{what} has {len(raw)} bytes of binary data; shape {shape} of "
            f"{v2_datatype(dtype)} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


NON_FINITE_LITERALS = (b"NaN", b"Infinity")
"""What TF Serving's JSON reads and writes for non-finite numbers: ``NaN``, ``Infinity``,
``-Infinity`` (as JavaScript and Python's json module do); strict JSON has none."""


def loads_json(raw: bytes) -> Any:
    """A JSON document, where numbers may also be ``NaN``, ``Infinity`` or ``-Infinity``.

    orjson reads strict JSON; a body it refuses that holds one of those literals is read
    again by Python's json module, which takes them (and is strict otherwise).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if not any(literal in raw for literal in NON_FINITE_LITERALS):
            raise
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise error from None


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise InvalidInput("request body is empty; expected JSON")
    try:
        return loads_json(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


def to_json(content: Any) -> bytes:
    """JSON bytes by orjson; numpy arrays and scalars serialised natively.

    Non-finite numbers are written as TF Serving writes them (``NaN``, ``Infinity``,
    ``-Infinity``), where orjson would write ``null``.
    """
    if _has_non_finite(content):
        return json.dumps(content, default=_plain, separators=(",", ":")).encode()
    return orjson.dumps(
        content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_plain
    )


def _has_non_finite(content: Any) -> bool:
    if isinstance(content, np.ndarray):
        return content.dtype.kind == "f" and content.size > 0 and not np.isfinite(content).all()
    if isinstance(content, (float, np.floating)):
        return not math.isfinite(content)
    if isinstance(content, dict):
        return any(_has_non_finite(value) for value in content.values())
    if isinstance(content, (list, tuple)):
        return any(_has_non_finite(value) for value in content)
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
