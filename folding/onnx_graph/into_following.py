"""Rule: a per-channel affine folded *forward*, into the ``Conv`` / ``Gemm`` /
``MatMul`` that reads it, where that is exact.

With ``x' = x * scale + shift`` feeding ``y = x' K + b``: ``K' = diag(scale) K``
and ``b' = b + shift K`` (``folding.math.fold_affine_into_following``). For a
``Conv`` the shift is summed over every tap, exact only with no padding (the
border would not see the shift); a grouped convolution (depthwise among them) is
folded group by group, each group's kernel reading its own slice of the channels.
For a ``Gemm``, alpha goes into the weight and beta into the bias; a ``MatMul``
gets an ``Add`` for ``shift K``.
"""

from __future__ import annotations

import numpy as np
import onnx

from folding import math
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, article, attribute, node_key
from folding.onnx_graph.into_gemm import feature_bias, set_attribute
from folding.onnx_graph.plan import Plan

UNPADDED = ("NOTSET", "VALID")


def plan(graph: OnnxGraph, affine: Affine) -> Plan:
    output = affine.node.output[0]
    consumer = graph.sole_user(output, "its output")
    if consumer.op_type not in ("Conv", "Gemm", "MatMul") or consumer.input[0] != output:
        raise NotFoldable(
            f"it feeds {article(consumer.op_type)}, which has no weights to fold into"
        )
    if output in consumer.input[1:]:
        raise NotFoldable(f"it is also a weight of '{node_key(consumer)}'")
    weight = graph.constant(consumer.input[1])
    if weight is None:
        raise NotFoldable(f"the weight of '{node_key(consumer)}' is not a constant")
    if consumer.op_type == "Conv":
        return _into_conv(graph, affine, consumer, weight)
    return _into_matrix(graph, affine, consumer, weight)


def _into_conv(graph: OnnxGraph, affine: Affine, conv: onnx.NodeProto, weight: np.ndarray) -> Plan:
    name = node_key(conv)
    auto_pad = attribute(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if any(attribute(conv, "pads", [])) or auto_pad not in UNPADDED:
        raise NotFoldable(f"'{name}' pads its input: the border would not see the shift")
    groups = int(attribute(conv, "group", 1))
    if (
        affine.axis_from_end is not None
        or not affine.fits(weight.ndim)
        or weight.shape[1] * groups != affine.params.channels
        or weight.shape[0] % groups
    ):
        raise NotFoldable("it does not scale the convolution's input channels")
    bias = graph.optional_constant(conv, 2, "bias")
    if bias is not None and bias.size != weight.shape[0]:
        raise NotFoldable(f"the bias of '{name}' has {bias.size} values")

    def apply() -> list[onnx.NodeProto]:
        flat_bias = None if bias is None else bias.reshape(-1)
        inputs, outputs = weight.shape[1], weight.shape[0] // groups
        kernels, biases = [], []
        for group in range(groups):  # group g reads channels g*inputs:(g+1)*inputs
            rows, columns = (
                slice(group * outputs, (group + 1) * outputs),
                slice(group * inputs, (group + 1) * inputs),
            )
            kernel = np.moveaxis(weight[rows], 0, -1)  # [in, *k, out]: as math reads it
            new_kernel, new_bias = math.fold_affine_into_following(
                kernel,
                None if flat_bias is None else flat_bias[rows],
                affine.scale[columns],
                affine.shift[columns],
                input_axis=0,
            )
            kernels.append(np.moveaxis(new_kernel, -1, 0))
            biases.append(new_bias)
        graph.set_constant(conv, 1, np.concatenate(kernels))
        graph.set_constant(conv, 2, np.concatenate(biases).astype(weight.dtype))
        return [conv]

    return apply


def _into_matrix(
    graph: OnnxGraph, affine: Affine, node: onnx.NodeProto, weight: np.ndarray
) -> Plan:
    name = node_key(node)
    gemm = node.op_type == "Gemm"
    if gemm and int(attribute(node, "transA", 0)):
        raise NotFoldable(f"'{name}' transposes its input (transA)")
    trans_b = int(attribute(node, "transB", 0)) if gemm else 0
    matrix = weight.T if trans_b else weight
    rank = 2 if gemm else graph.rank(affine.input)
    feature_axis = affine.axis_from_end == 0 or rank == 2
    if (
        matrix.ndim != 2
        or matrix.shape[0] != affine.params.channels
        or not feature_axis
        or (rank is not None and not affine.fits(rank))
    ):
        raise NotFoldable("it does not scale the input features of the next layer")
    bias = None
    if gemm:
        bias = feature_bias(graph.optional_constant(node, 2, "bias"), matrix.shape[1], name)
    alpha = float(attribute(node, "alpha", 1.0)) if gemm else 1.0
    beta = float(attribute(node, "beta", 1.0)) if gemm else 1.0

    def apply() -> list[onnx.NodeProto]:
        # ``alpha * x' K + beta * C``: K takes alpha, the bias beta
        kernel = matrix if alpha == 1.0 else (matrix * alpha).astype(matrix.dtype)
        scaled = bias if bias is None or beta == 1.0 else (bias * beta).astype(bias.dtype)
        new_matrix, added = math.fold_affine_into_following(
            kernel, scaled, affine.scale, affine.shift, input_axis=0
        )
        graph.set_constant(node, 1, new_matrix.T if trans_b else new_matrix)
        if gemm:
            graph.set_constant(node, 2, added.astype(weight.dtype))
            set_attribute(node, "alpha", 1.0)
            set_attribute(node, "beta", 1.0)
        elif np.any(added):
            graph.append_after(node.output[0], "Add", added.astype(weight.dtype), f"{name}_shift")
        return [node]

    return apply
