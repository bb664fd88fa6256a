"""Constant sub-expressions, evaluated with numpy as ONNX Runtime would.

Exporters leave weights behind small expressions of constants: PyTorch's
``Linear(bias=False)`` as ``MatMul(x, Transpose(W))``, FrozenBatchNorm's scale as
``w * rsqrt(v + eps)`` (``Mul``, ``Reciprocal``, ``Sqrt``, ``Add`` of reshaped
initializers), BN parameters through ``Identity`` nodes (TorchScript shares equal
initializers), casts; the dynamo exporter's bias of a ``bias=False`` convolution as zeros
computed at run time, ``Expand(CastLike(0, x), Shape(weight)[:1])``. Each op here
is a pure function of its inputs; an expression is evaluated only when every input
is a constant (``CastLike`` needs only its target's dtype, ``Shape`` only its
input's value), and only when its result is no larger than its inputs together,
or for ``Expand`` no larger than ``MAX_EXPANDED`` elements (a broadcast that would
materialise a big tensor is left to the runtime).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

PURE_OPS = frozenset(
    {
        "Constant",
        "Identity",
        "Cast",
        "Transpose",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Neg",
        "Sqrt",
        "Reciprocal",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Shape",
        "CastLike",
        "Expand",
    }
)

MAX_EXPANDED = 1 << 16
"""The most elements an ``Expand`` of constants is evaluated to (a bias's channels)."""


def _attribute(node: onnx.NodeProto, name: str, default):
    for entry in node.attribute:
        if entry.name == name:
            return onnx.helper.get_attribute_value(entry)
    return default


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A ``Constant`` node's value (tensor, float(s) or int(s) form)."""
    for entry in node.attribute:
        if entry.name == "value":
            return numpy_helper.to_array(entry.t)
        if entry.name == "value_float":
            return np.asarray(entry.f, np.float32)
        if entry.name == "value_floats":
            return np.asarray(list(entry.floats), np.float32)
        if entry.name == "value_int":
            return np.asarray(entry.i, np.int64)
        if entry.name == "value_ints":
            return np.asarray(list(entry.ints), np.int64)
    return None  # sparse or string constants are left alone


def evaluate(node: onnx.NodeProto, values: list, opset: int) -> np.ndarray | None:
    """The output of ``node`` on constant ``values`` (None for an absent optional
    input), or None when it is not evaluated here."""
    try:
        result = _evaluate(node, values, opset)
    except (ValueError, TypeError, IndexError, KeyError):  # a shape numpy refuses
        return None
    if result is None:
        return None
    result = np.asarray(result)
    limit = max(sum(np.size(v) for v in values if v is not None), 1)
    if result.size > (max(limit, MAX_EXPANDED) if node.op_type == "Expand" else limit):
        return None
    return result


def cast_like(value: np.ndarray, elem_type: int) -> np.ndarray:
    """``CastLike(value, target)``, from the target's ONNX element type alone."""
    return value.astype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _evaluate(node: onnx.NodeProto, values: list, opset: int) -> np.ndarray | None:
    op = node.op_type
    first = values[0]
    if op == "Identity":
        return first
    if op == "Cast":
        return first.astype(onnx.helper.tensor_dtype_to_np_dtype(_attribute(node, "to", 1)))
    if op == "Transpose":
        perm = _attribute(node, "perm", None)
        return np.transpose(first, perm)
    if op == "Reshape":
        return _reshape(first, values[1], bool(_attribute(node, "allowzero", 0)))
    if op == "Flatten":
        axis = _attribute(node, "axis", 1)
        axis = axis + first.ndim if axis < 0 else axis
        return first.reshape(int(np.prod(first.shape[:axis])), -1)
    if op in ("Squeeze", "Unsqueeze"):
        axes = _axes(node, values, opset)
        if op == "Squeeze":
            return np.squeeze(first, axis=None if axes is None else tuple(axes))
        result = first
        rank = first.ndim + len(axes)
        for axis in sorted(a + rank if a < 0 else a for a in axes):
            result = np.expand_dims(result, axis)
        return result
    if op == "Concat":
        return np.concatenate(values, axis=_attribute(node, "axis", 0))
    if op == "Shape":
        start, end = _attribute(node, "start", 0), _attribute(node, "end", None)
        return np.asarray(first.shape[start:end], np.int64)
    if op == "CastLike":
        return first.astype(values[1].dtype)
    if op == "Expand":
        return first * np.ones([int(d) for d in values[1].reshape(-1)], first.dtype)
    floats = all(v.dtype.kind == "f" for v in values if v is not None)
    if op == "Neg":
        return np.negative(first)
    if op in ("Sqrt", "Reciprocal") and floats:
        return np.sqrt(first) if op == "Sqrt" else np.reciprocal(first)
    if op in ("Add", "Sub", "Mul") and values[1].dtype == first.dtype:
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](first, values[1])
    if op in ("Div", "Pow") and floats and values[1].dtype == first.dtype:
        return np.divide(first, values[1]) if op == "Div" else np.power(first, values[1])
    return None


def _axes(node: onnx.NodeProto, values: list, opset: int) -> list[int] | None:
    if opset >= 13:
        return None if len(values) < 2 or values[1] is None else [int(a) for a in values[1]]
    axes = _attribute(node, "axes", None)
    return None if axes is None else [int(a) for a in axes]


def _reshape(array: np.ndarray, shape: np.ndarray, allowzero: bool) -> np.ndarray:
    target = [int(d) for d in shape.reshape(-1)]
    if not allowzero:
        target = [array.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return array.reshape(target)
