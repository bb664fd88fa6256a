"""Cross-layer equalization of consecutive convolutions (Nagel et al., ICCV 2019, section 4.1).

For ``Conv A -> [Relu] -> Conv B`` where A's output reaches B alone, channel ``i``
of A's output can be divided by any ``s_i > 0`` if B's input channel ``i`` is
multiplied by it (ReLU commutes with a positive scale). With ``r1_i`` the range
of A's output channel ``i`` and ``r2_i`` the range of B's input channel ``i``,

    s_i = sqrt(r1_i * r2_i) / r2_i

gives both channels the same range ``sqrt(r1_i * r2_i)``: a channel that a large
BN scale blew up no longer sizes the int8 grid of the activation between them.
Pairs are equalized where A's per-channel ranges spread by more than the
scale-spread diagnostic's limit.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from folding.diagnostics import SCALE_SPREAD_LIMIT

HOMOGENEOUS = {"Relu", "LeakyRelu", "PRelu"}  # f(s * x) = s * f(x) for s > 0


def equalization_scales(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``s_i = sqrt(r1_i * r2_i) / r2_i``; 1 where either range is 0."""
    r1 = np.abs(first).reshape(first.shape[0], -1).max(axis=1)
    r2 = np.abs(np.moveaxis(second, 1, 0)).reshape(second.shape[1], -1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.sqrt(r1 * r2) / r2
    return np.where(np.isfinite(scales) & (scales > 0), scales, 1.0)


def range_spread(weights: np.ndarray) -> float:
    """max / median of a kernel's per-output-channel ranges (0 when the median is 0)."""
    ranges = np.abs(weights).reshape(weights.shape[0], -1).max(axis=1)
    median = float(np.median(ranges))
    return float(ranges.max() / median) if median > 0 else 0.0


def equalize_pairs(
    model: onnx.ModelProto, spread_limit: float = SCALE_SPREAD_LIMIT
) -> tuple[onnx.ModelProto, list[dict]]:
    """A copy of ``model`` with every flagged Conv pair equalized, and the pairs it changed."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    changed = []
    for first in graph.node:
        second, between = _partner(first, users, outputs)
        if second is None or not _plain_weights(first, second, tensors, users):
            continue
        w1 = numpy_helper.to_array(tensors[first.input[1]])
        w2 = numpy_helper.to_array(tensors[second.input[1]])
        if w2.shape[1] != w1.shape[0] or _group(second) != 1:
            continue
        spread = range_spread(w1)
        if spread <= spread_limit:
            continue
        scales = equalization_scales(w1, w2)
        shape1 = (-1,) + (1,) * (w1.ndim - 1)
        shape2 = (1, -1) + (1,) * (w2.ndim - 2)
        _replace(tensors[first.input[1]], w1 / scales.reshape(shape1))
        _replace(tensors[second.input[1]], w2 * scales.reshape(shape2))
        if len(first.input) > 2 and first.input[2]:
            bias = numpy_helper.to_array(tensors[first.input[2]])
            _replace(tensors[first.input[2]], bias / scales)
        changed.append(
            {
                "first": first.name or first.output[0],
                "second": second.name or second.output[0],
                "through": between,
                "spread_before": spread,
                "spread_after": range_spread(numpy_helper.to_array(tensors[first.input[1]])),
            }
        )
    return model, changed


def _partner(
    node: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]], outputs: set[str]
) -> tuple[onnx.NodeProto | None, str | None]:
    """The Conv that alone reads ``node``'s output, directly or through one ReLU-like node."""
    if node.op_type != "Conv" or node.output[0] in outputs:
        return None, None
    readers = users.get(node.output[0], [])
    if len(readers) != 1:
        return None, None
    between = None
    if readers[0].op_type in HOMOGENEOUS and readers[0].op_type != "PRelu":
        between = readers[0].op_type
        if readers[0].output[0] in outputs:
            return None, None
        readers = users.get(readers[0].output[0], [])
        if len(readers) != 1:
            return None, None
    reader = readers[0]
    if reader.op_type != "Conv" or reader.input[0] != (
        node.output[0] if between is None else users[node.output[0]][0].output[0]
    ):
        return None, None
    return reader, between


def _plain_weights(first, second, tensors, users) -> bool:
    """Weights and bias are stored float32 initializers that nothing else reads."""
    names = [first.input[1], second.input[1]]
    if len(first.input) > 2 and first.input[2]:
        names.append(first.input[2])
    return all(
        name in tensors
        and tensors[name].data_type == onnx.TensorProto.FLOAT
        and len(users.get(name, [])) == 1
        for name in names
    )


def _group(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "group":
            return attribute.i
    return 1


def _replace(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
