"""Rule: a per-feature affine after a ``MatMul`` with a constant ``[K, N]`` weight.

The weight's columns are scaled; the shift needs a bias: the constant ``Add``
right after the MatMul when there is one (``MatMul -> Add(bias) -> BN``, how
exporters write a linear layer), else a new ``Add``. A BN reads axis 1, which is
the MatMul's feature axis only for a 2-D output (shape inference says); a lone
``Add`` right after a MatMul is its bias, not a BN.
"""

from __future__ import annotations

import numpy as np
import onnx

from folding import math
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, node_key
from folding.onnx_graph.plan import Plan


def matrix(graph: OnnxGraph, matmul: onnx.NodeProto, features: int) -> np.ndarray:
    weight = graph.constant(matmul.input[1])
    if weight is None:
        raise NotFoldable(f"the weight of '{node_key(matmul)}' is not a constant")
    if weight.ndim != 2 or weight.shape[1] != features:
        raise NotFoldable(f"the weight of '{node_key(matmul)}' is not [K, {features}]")
    return weight


def check_feature_axis(graph: OnnxGraph, affine: Affine, tensor: str) -> None:
    """``affine`` scales the last axis of ``tensor`` (a MatMul's features)."""
    if affine.axis_from_end == 0 and (affine.operand_rank or 0) <= 2:
        return
    rank = graph.rank(tensor)
    if rank is None:
        raise NotFoldable(f"the rank of '{tensor}' is unknown: which axis it scales is not")
    if not affine.fits(rank) or (affine.axis_from_end is None and rank != 2):
        raise NotFoldable(f"it scales axis 1 of a rank-{rank} MatMul output, not its features")


def plan(graph: OnnxGraph, affine: Affine, node: onnx.NodeProto, behind: bool = False) -> Plan:
    """``behind``: ``affine`` sits behind a layout change of the MatMul's output
    (``through_layout``), so a shift alone moves to right after the MatMul."""
    if node.op_type == "Add":
        return _plan_biased(graph, affine, node)
    name = node_key(node)
    if np.all(affine.scale == 1.0) and not behind:
        raise NotFoldable(f"an Add right after '{name}' is its bias: nothing to fold")
    graph.sole_user(node.output[0], f"the output of '{name}'")
    weight = matrix(graph, node, affine.params.channels)
    check_feature_axis(graph, affine, node.output[0])

    def apply() -> list[onnx.NodeProto]:
        new_weight, new_bias = math.fold_into_preceding(weight, None, affine.params, -1)
        graph.set_constant(node, 1, new_weight)
        if np.any(new_bias):
            graph.append_after(node.output[0], "Add", new_bias, f"{name}_shift")
        return [node]

    return apply


def _plan_biased(graph: OnnxGraph, affine: Affine, add: onnx.NodeProto) -> Plan:
    """``MatMul -> Add(bias) -> affine``: the pair is one linear layer."""
    name = node_key(add)
    matmul, bias_index = None, None
    for index in (0, 1):
        producer = graph.producer(add.input[index])
        if producer is not None and producer.op_type == "MatMul":
            matmul, bias_index = producer, 1 - index
    bias = None if bias_index is None else graph.constant(add.input[bias_index])
    if matmul is None or bias is None:
        raise NotFoldable(f"'{name}' is an Add, which has no weights to fold into")
    graph.sole_user(add.output[0], f"the output of '{name}'")
    graph.sole_user(matmul.output[0], f"the output of '{node_key(matmul)}'")
    channels = affine.params.channels
    weight = matrix(graph, matmul, channels)
    check_feature_axis(graph, affine, add.output[0])
    if bias.size not in (1, channels) or bias.shape[-1:] not in ((1,), (channels,)):
        raise NotFoldable(f"the bias '{add.input[bias_index]}' is not one value per feature")

    def apply() -> list[onnx.NodeProto]:
        flat_bias = np.broadcast_to(bias.reshape(-1), (channels,)).astype(bias.dtype)
        new_weight, new_bias = math.fold_into_preceding(weight, flat_bias, affine.params, -1)
        graph.set_constant(matmul, 1, new_weight)
        graph.set_constant(add, bias_index, new_bias)
        return [matmul]

    return apply
