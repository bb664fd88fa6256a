"""Rule: a per-channel affine after a ``Conv`` or ``ConvTranspose`` goes into its weights.

``Conv`` weights are ``[out, in / group, *k]`` (grouped and depthwise alike: output
channel ``c`` is row ``c``); ``ConvTranspose`` weights are ``[in, out / group, *k]``
(``folding.math.fold_into_preceding_grouped_transpose``). The bias becomes
``(b - mean) * scale + beta``; a bias computed at run time keeps the BN.
"""

from __future__ import annotations

import numpy as np
import onnx

from folding import math
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, attribute, node_key
from folding.onnx_graph.plan import Plan


def output_channels(graph: OnnxGraph, conv: onnx.NodeProto) -> int:
    weight = graph.constant(conv.input[1])
    if weight is None:
        raise NotFoldable(f"the weight of '{node_key(conv)}' is not a constant")
    if conv.op_type == "Conv":
        return int(weight.shape[0])
    return int(attribute(conv, "group", 1)) * int(weight.shape[1])


def plan(graph: OnnxGraph, affine: Affine, conv: onnx.NodeProto) -> Plan:
    name = node_key(conv)
    graph.sole_user(conv.output[0], f"the output of '{name}'")
    channels = output_channels(graph, conv)
    weight = graph.constant(conv.input[1])
    if affine.axis_from_end is not None:
        raise NotFoldable("it scales the last axis, not the channel axis 1")
    if not affine.fits(weight.ndim):
        raise NotFoldable(f"its constant broadcasts over other axes of '{name}' than its channels")
    if channels != affine.params.channels:
        raise NotFoldable(f"'{name}' has {channels} output channels")
    bias = graph.optional_constant(conv, 2, "bias")
    if bias is not None and bias.size != channels:
        raise NotFoldable(f"the bias of '{name}' has {bias.size} values")
    groups = int(attribute(conv, "group", 1))

    def apply() -> list[onnx.NodeProto]:
        flat_bias = None if bias is None else bias.reshape(-1)
        if conv.op_type == "Conv" and np.all(affine.scale == 1.0):
            # a shift alone (a bias Add): ``W * 1`` is ``W``, so the weight is kept as it
            # is and only the bias is computed (on no weight columns, the same formula)
            _, new_bias = math.fold_into_preceding(
                weight[:, :0], flat_bias, affine.params, output_axis=0
            )
            graph.set_constant(conv, 2, new_bias)
            return [conv]
        if conv.op_type == "Conv":
            new_weight, new_bias = math.fold_into_preceding(
                weight, flat_bias, affine.params, output_axis=0
            )
        else:
            new_weight, new_bias = math.fold_into_preceding_grouped_transpose(
                weight, flat_bias, affine.params, groups
            )
        graph.set_constant(conv, 1, new_weight)
        graph.set_constant(conv, 2, new_bias)
        return [conv]

    return apply
