"""Rule: a BN behind ``Flatten`` / ``Reshape`` / ``Transpose`` / ``Squeeze`` /
``Unsqueeze`` of a linear layer's output.

A pooled ``[N, C, 1, 1]`` map flattened to ``[N, C]`` keeps C as its last axis too
(a 1x1 convolution's head flattened for a ``BatchNorm1d``).

LeViT's linear-norm runs ``BatchNorm1d`` on ``linear(x).flatten(0, 1)``; a
sequence model runs it on ``linear(x).transpose(1, 2)``; tf2onnx writes a Keras
``Dense`` on a sequence as ``Reshape(MatMul(Reshape(x, [-1, K])), shape)`` with
``shape`` computed from ``Shape(x)`` and the constant feature count last, and a
``Conv1D`` as a 2-D ``Conv`` between ``Unsqueeze`` and ``Squeeze``. The feature
axis of the ``MatMul`` / ``Gemm`` (its last) or of the ``Conv`` (axis 1) is
followed through the chain: a ``Transpose`` moves it, a ``Squeeze`` /
``Unsqueeze`` of other axes shifts it, a ``Reshape`` or ``Flatten`` keeps it only
when it stays last with the same size (then every element keeps its feature: the
flat index modulo the feature count). When it ends where the BN scales (axis 1, or
the last axis for a ``[C]`` constant), the BN folds into the layer exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from folding.onnx_graph import into_conv, into_gemm, into_matmul
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, article, attribute, node_key
from folding.onnx_graph.plan import Plan

LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
LINEAR = {"MatMul": into_matmul.plan, "Add": into_matmul.plan, "Gemm": into_gemm.plan}
CONVOLUTIONS = ("Conv", "ConvTranspose")


@dataclass
class Axis:
    """Where the features are: ``index`` (None: unknown) in a tensor of ``rank``
    (None: unknown); ``last`` when they are its last axis."""

    index: int | None
    rank: int | None
    last: bool


def plan(graph: OnnxGraph, affine: Affine, node: onnx.NodeProto) -> Plan:
    chain = []
    current: onnx.NodeProto | None = node
    while current is not None and current.op_type in LAYOUT_OPS:
        graph.sole_user(current.output[0], f"the output of '{node_key(current)}'")
        chain.append(current)
        current = graph.producer(current.input[0])
    if current is None or current.op_type not in (*LINEAR, *CONVOLUTIONS):
        what = "a graph input" if current is None else article(current.op_type)
        raise NotFoldable(
            f"'{node_key(node)}' is {article(node.op_type)} of {what}, which has no weights"
        )
    channels = affine.params.channels
    if current.op_type in CONVOLUTIONS:
        weight = graph.constant(current.input[1])
        if weight is None:
            raise NotFoldable(f"the weight of '{node_key(current)}' is not a constant")
        axis = Axis(1, weight.ndim, False)
    else:
        rank = graph.rank(current.output[0])
        axis = Axis(None if rank is None else rank - 1, rank, True)
    for layout in reversed(chain):
        axis = _through(graph, layout, axis, channels)
    if affine.axis_from_end == 0:
        ends_right = axis.last
    else:
        ends_right = axis.index == 1 or (axis.last and axis.rank == 2)
    if not ends_right or (axis.rank is not None and not affine.fits(axis.rank)):
        raise NotFoldable(
            f"the {node.op_type} after '{node_key(current)}' moves its features off the "
            "axis the BN scales"
        )
    if current.op_type in CONVOLUTIONS:  # the channels are axis 1 of the convolution's output
        channels_first = Affine(affine.node, affine.input, affine.params, None)
        return into_conv.plan(graph, channels_first, current)
    if current.op_type == "MatMul":
        return into_matmul.plan(graph, affine.on_last_axis(), current, behind=True)
    return LINEAR[current.op_type](graph, affine.on_last_axis(), current)


def _through(graph: OnnxGraph, node: onnx.NodeProto, axis: Axis, channels: int) -> Axis:
    name = node_key(node)
    if node.op_type == "Transpose":
        perm = attribute(node, "perm", None)
        if perm is None:
            raise NotFoldable(f"'{name}' reverses the axes (no perm)")
        rank = len(perm)
        index = axis.index if axis.index is not None else rank - 1 if axis.last else None
        if index is None or index not in perm:
            raise NotFoldable(f"which axis '{name}' moves the features to is unknown")
        moved = list(perm).index(index)
        return Axis(moved, rank, moved == rank - 1)
    if node.op_type in ("Squeeze", "Unsqueeze"):
        return _squeezed(graph, node, axis)
    if not axis.last and _only_ones_after(graph.shape(node.input[0]), axis.index):
        axis = Axis(axis.index, axis.rank, True)  # ``[N, C, 1, 1]``: C is last in memory
    if not axis.last:
        raise NotFoldable(f"'{name}' reshapes the features, which are not the last axis")
    shape = graph.shape(node.output[0])
    if node.op_type == "Reshape":
        target = graph.constant(node.input[1])
        if target is not None and target.size and int(target.reshape(-1)[-1]) == channels:
            return Axis(target.size - 1, int(target.size), True)
        if target is None and _last_entry(graph, node.input[1]) == channels:
            length = graph.shape(node.input[1])  # the shape tensor's own shape: [rank]
            known = length[0] if length and length[0] else None
            rank = len(shape) if shape else known
            return Axis(None if rank is None else rank - 1, rank, True)
    elif node.op_type == "Flatten" and int(attribute(node, "axis", 1)) == -1:
        return Axis(1, 2, True)
    if shape is not None and shape and shape[-1] == channels:
        return Axis(len(shape) - 1, len(shape), True)
    raise NotFoldable(f"'{name}' may not keep the {channels} features as its last axis")


def _last_entry(graph: OnnxGraph, tensor: str) -> int | None:
    """The last entry of a shape computed at run time, when it is a constant: the
    ``Concat`` (behind any ``Cast``) of run-time sizes and a constant tail."""
    producer = graph.producer(tensor)
    while producer is not None and producer.op_type == "Cast":
        producer = graph.producer(producer.input[0])
    if producer is None or producer.op_type != "Concat" or not producer.input:
        return None
    tail = graph.constant(producer.input[-1])
    if tail is None or tail.dtype.kind not in "iu" or tail.size == 0:
        return None
    return int(tail.reshape(-1)[-1])


def _squeezed(graph: OnnxGraph, node: onnx.NodeProto, axis: Axis) -> Axis:
    """Where ``Squeeze`` / ``Unsqueeze`` of other axes moves the features."""
    name = node_key(node)
    if graph.opset >= 13:
        values = graph.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        axes = None if values is None else [int(a) for a in values.reshape(-1)]
    else:
        axes = attribute(node, "axes", None)
        axes = None if axes is None else [int(a) for a in axes]
    if axes is None or axis.rank is None or axis.index is None:
        raise NotFoldable(f"which axes '{name}' removes or adds is unknown")
    if node.op_type == "Squeeze":
        removed = {a + axis.rank if a < 0 else a for a in axes}
        if axis.index in removed:
            raise NotFoldable(f"'{name}' removes the feature axis")
        rank = axis.rank - len(removed)
        index = axis.index - sum(a < axis.index for a in removed)
    else:
        rank = axis.rank + len(axes)
        added = {a + rank if a < 0 else a for a in axes}
        kept = [position for position in range(rank) if position not in added]
        index = kept[axis.index]
    return Axis(index, rank, index == rank - 1)


def _only_ones_after(shape: list[int | None] | None, index: int | None) -> bool:
    """Every axis after ``index`` of ``shape`` has size 1 (a pooled feature map)."""
    if shape is None or index is None or index >= len(shape):
        return False
    return all(size == 1 for size in shape[index + 1 :])
