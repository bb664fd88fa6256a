"""Rule: a BN behind ``Flatten`` / ``Reshape`` / ``Transpose`` of a linear layer's output.

LeViT's linear-norm runs ``BatchNorm1d`` on ``linear(x).flatten(0, 1)``; a
sequence model runs it on ``linear(x).transpose(1, 2)``. The feature axis of the
``MatMul`` / ``Gemm`` (its last) is followed through the chain: a ``Transpose``
moves it, a ``Reshape`` or ``Flatten`` keeps it only when it stays last with the
same size (then every element keeps its feature: the flat index modulo the
feature count). When it ends where the BN scales (axis 1, or the last axis for a
``[C]`` constant), the BN folds into the linear layer exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from folding.onnx_graph import into_gemm, into_matmul
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, article, attribute, node_key
from folding.onnx_graph.plan import Plan

LAYOUT_OPS = ("Reshape", "Flatten", "Transpose")
LINEAR = {"MatMul": into_matmul.plan, "Add": into_matmul.plan, "Gemm": into_gemm.plan}


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
    if current is None or current.op_type not in LINEAR:
        what = "a graph input" if current is None else article(current.op_type)
        raise NotFoldable(
            f"'{node_key(node)}' is {article(node.op_type)} of {what}, which has no weights"
        )
    channels = affine.params.channels
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
    if not axis.last:
        raise NotFoldable(f"'{name}' reshapes the features, which are not the last axis")
    shape = graph.shape(node.output[0])
    if node.op_type == "Reshape":
        target = graph.constant(node.input[1])
        if target is not None and target.size and int(target.reshape(-1)[-1]) == channels:
            return Axis(target.size - 1, int(target.size), True)
    elif node.op_type == "Flatten" and int(attribute(node, "axis", 1)) == -1:
        return Axis(1, 2, True)
    if shape is not None and shape and shape[-1] == channels:
        return Axis(len(shape) - 1, len(shape), True)
    raise NotFoldable(f"'{name}' may not keep the {channels} features as its last axis")
