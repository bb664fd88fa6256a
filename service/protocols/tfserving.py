"""TensorFlow Serving's REST request and response formats.

Request (https://www.tensorflow.org/tfx/serving/api_rest#request_format_2)::

    {"signature_name": <string>,            # optional
     "instances": <value>|<(nested)list>|<list-of-objects>}   # row format
    {"signature_name": <string>,
     "inputs": <value>|<(nested)list>|<object>}               # columnar format

Row format: one list element per row; for a model with several inputs each
row is an object ``{input_name: value}``. Columnar format: one value (single
input) or an object of named values, each carrying the batch axis.

Response: ``{"predictions": [...]}`` for the row format (a list of objects
``{output_name: value}`` when the model has several outputs) and
``{"outputs": value | {output_name: value}}`` for the columnar format.
Errors: ``{"error": <message>}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import InvalidInput
from service.protocols.codecs import array_from_json, parse_json, tf_datatype
from service.protocols.dense_json import dense_array, read_dense

if TYPE_CHECKING:
    from service.core.catalog import VersionEntry
    from service.runtime.sessions import TensorMeta

SIGNATURE = "serving_default"

NOT_CLASSIFIABLE = (
    "':{verb}' needs a {kind} signature over tf.Example inputs; each foldserve model has one "
    "predict signature ('serving_default', method tensorflow/serving/predict) of dense "
    "tensors: send the same rows to ':predict'"
)


def read_request(raw: bytes, inputs: list[TensorMeta]) -> tuple[dict[str, np.ndarray], bool]:
    """``parse_request`` on a body's bytes. A body of one dense array of numbers for a
    one-input model is read without building nested lists (``dense_json``), to the
    same arrays; every other body, and every error, is the general path's."""
    dense = read_dense(raw) if len(inputs) == 1 else None
    if dense is None:
        return parse_request(parse_json(raw), inputs)
    key, values, shape = dense
    name = inputs[0].name
    array = dense_array(values, np.dtype(inputs[0].dtype), _what(name))
    return {name: array.reshape(shape)}, key == "instances"


def parse_request(body: Any, inputs: list[TensorMeta]) -> tuple[dict[str, np.ndarray], bool]:
    """The named input arrays, and whether the request used the row format."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE)
    if signature not in (SIGNATURE, ""):  # empty means the default, as in TF Serving
        raise InvalidInput(f"unknown signature_name {signature!r}; the only one is '{SIGNATURE}'")
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise InvalidInput("request must have exactly one of 'instances' (row format) or 'inputs'")
    dtypes = {meta.name: meta.dtype for meta in inputs}
    if has_rows:
        return _rows(body["instances"], inputs, dtypes), True
    return _columns(body["inputs"], inputs, dtypes), False


def _rows(
    instances: Any, inputs: list[TensorMeta], dtypes: dict[str, np.dtype]
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise InvalidInput("'instances' must be a list with one element per row")
    if not instances:
        raise InvalidInput("'instances' is empty: send at least one row")
    if all(isinstance(row, dict) for row in instances):
        keys = set(instances[0])
        _refuse_binary(keys, inputs)
        for index, row in enumerate(instances):
            if set(row) != keys:
                raise InvalidInput(
                    f"instance {index} has inputs {sorted(row)}; instance 0 has {sorted(keys)}"
                )
        return {
            name: array_from_json(
                [row[name] for row in instances], _dtype(name, dtypes), _what(name)
            )
            for name in keys
        }
    if any(isinstance(row, dict) for row in instances):
        raise InvalidInput("'instances' mixes objects and plain values")
    if len(inputs) != 1:
        names = ", ".join(meta.name for meta in inputs)
        raise InvalidInput(f"model has {len(inputs)} inputs ({names}); give each row as an object")
    name = inputs[0].name
    return {name: array_from_json(instances, dtypes[name], f"input '{name}'")}


def _columns(
    columns: Any, inputs: list[TensorMeta], dtypes: dict[str, np.dtype]
) -> dict[str, np.ndarray]:
    if isinstance(columns, dict):
        _refuse_binary(set(columns), inputs)
        return {
            name: array_from_json(value, _dtype(name, dtypes), _what(name))
            for name, value in columns.items()
        }
    if len(inputs) != 1:
        names = ", ".join(meta.name for meta in inputs)
        raise InvalidInput(f"model has {len(inputs)} inputs ({names}); give 'inputs' as an object")
    name = inputs[0].name
    return {name: array_from_json(columns, dtypes[name], f"input '{name}'")}


def _refuse_binary(keys: set[str], inputs: list[TensorMeta]) -> None:
    """``{"b64": "..."}`` is TF Serving's JSON for binary (DT_STRING) values; foldserve's
    inputs are numeric, so say that rather than "unknown input 'b64'"."""
    if keys == {"b64"} and all(meta.name != "b64" for meta in inputs):
        described = ", ".join(f"'{meta.name}' {meta.dtype}" for meta in inputs)
        raise InvalidInput(
            '{"b64": ...} is TF Serving\'s encoding of binary string values, and this '
            f"model's inputs are numeric ({described}): send the numbers themselves"
        )


def _dtype(name: str, dtypes: dict[str, np.dtype]) -> np.dtype:
    """The model's dtype for an input; for a name the model lacks, a neutral one (the
    dataplane refuses unknown inputs, in one place for every protocol)."""
    return dtypes.get(name, np.dtype(np.float64))


def _what(name: str) -> str:
    return f"input '{name}'"


def render_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if row_format:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        batch = len(next(iter(outputs.values())))
        return {
            "predictions": [
                {name: value[index] for name, value in outputs.items()} for index in range(batch)
            ]
        }
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values()))}
    return {"outputs": outputs}


def signature(metas: list[TensorMeta]) -> dict[str, Any]:
    return {
        meta.name: {
            "dtype": tf_datatype(meta.dtype),
            "tensor_shape": {
                "dim": [{"size": str(dim), "name": ""} for dim in meta.shape],
                "unknown_rank": False,
            },
            "name": meta.name,
        }
        for meta in metas
    }


VERSION_STATES = {"AVAILABLE": "AVAILABLE", "LOADING": "LOADING", "UNAVAILABLE": "END"}
"""The catalog's version states as ``ModelVersionStatus.State`` names them."""


def version_status(entry: VersionEntry) -> dict[str, Any]:
    """One ``model_version_status`` entry (its JSON form; gRPC sets the same fields)::

    {"version": <string>, "state": "AVAILABLE"|"LOADING"|"END",
     "status": {"error_code": <canonical code name>, "error_message": <string>}}
    """
    state = VERSION_STATES[entry.state]
    return {
        "version": str(entry.version),
        "state": state,
        "status": {
            "error_code": entry.error_code,
            "error_message": entry.reason if state == "END" else "",
        },
    }
