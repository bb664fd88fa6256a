"""Rule: a per-feature affine after a ``Gemm`` goes into its weight and bias.

``Y = alpha * A B + beta * C``: scaling B's output columns (rows with ``transB``)
scales ``A B`` exactly, whatever alpha is; the bias becomes
``(beta * C - mean) * scale + beta_bn`` and the Gemm's beta 1. A bias that is not
one value per output feature (a per-row ``C``) keeps the BN.
"""

from __future__ import annotations

import numpy as np
import onnx

from folding import math
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, attribute, node_key
from folding.onnx_graph.plan import Plan


def set_attribute(node: onnx.NodeProto, name: str, value: float) -> None:
    for entry in list(node.attribute):
        if entry.name == name:
            node.attribute.remove(entry)
    node.attribute.append(onnx.helper.make_attribute(name, value))


def feature_bias(bias: np.ndarray | None, features: int, name: str) -> np.ndarray | None:
    """A bias that broadcasts one value per output feature, as ``[features]``."""
    if bias is None:
        return None
    if bias.size not in (1, features) or (bias.ndim == 2 and bias.shape[0] != 1):
        raise NotFoldable(f"the bias of '{name}' has shape {list(bias.shape)}, not per feature")
    return np.broadcast_to(bias.reshape(-1), (features,))


def plan(graph: OnnxGraph, affine: Affine, gemm: onnx.NodeProto) -> Plan:
    name = node_key(gemm)
    graph.sole_user(gemm.output[0], f"the output of '{name}'")
    weight = graph.constant(gemm.input[1])
    if weight is None:
        raise NotFoldable(f"the weight of '{name}' is not a constant")
    if not affine.fits(2):
        raise NotFoldable("it scales an axis Gemm does not produce")
    trans_b = int(attribute(gemm, "transB", 0))
    features = weight.shape[0] if trans_b else weight.shape[1]
    if features != affine.params.channels:
        raise NotFoldable(f"'{name}' has {features} output features")
    bias = feature_bias(graph.optional_constant(gemm, 2, "bias"), features, name)
    beta = float(attribute(gemm, "beta", 1.0))

    def apply() -> list[onnx.NodeProto]:
        scaled_bias = None if bias is None else (bias * beta).astype(bias.dtype)
        new_weight, new_bias = math.fold_into_preceding(
            weight, scaled_bias, affine.params, output_axis=0 if trans_b else -1
        )
        graph.set_constant(gemm, 1, new_weight)
        graph.set_constant(gemm, 2, new_bias.astype(weight.dtype))
        set_attribute(gemm, "beta", 1.0)
        return [gemm]

    return apply
