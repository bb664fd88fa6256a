"""Rule: a BN an exporter decomposed is one BN: a per-channel ``Mul`` (its scale)
feeding only a per-channel ``Add`` / ``Sub`` (its shift) on the same axis.

tf2onnx writes a Keras BN as ``Mul`` + ``Add`` (scope ``.../batchnorm``),
torchvision's FrozenBatchNorm2d as ``x * scale + bias`` with both computed from
its buffers. Each half folds like any affine; the pair is reported once, folded
when the scale went into a linear node and the shift went in too or now sits
right after that node as its bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from folding import math
from folding.onnx_graph.affine import Affine, affine_of
from folding.onnx_graph.graph import OnnxGraph

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
NORMALIZATIONS = ("InstanceNormalization", "LayerNormalization", "GroupNormalization")
"""A pair right after one of these (through reshapes) is that norm's own affine: the
TorchScript exporter writes ``GroupNorm`` as ``InstanceNormalization`` of a reshape,
reshaped back, then ``Mul`` + ``Add``. It folds like any pair but is no BN."""


@dataclass
class Pair:
    scale: Affine
    shift: Affine
    normalizes: str | None = None  # the normalization whose affine it is, if any

    @property
    def keys(self) -> tuple[str, str]:
        return self.scale.key, self.shift.key

    @property
    def name(self) -> str:
        first, second = self.keys
        common = ""
        for a, b in zip(first.split("/"), second.split("/"), strict=False):
            if a != b:
                break
            common += f"{a}/"
        scope = common.rstrip("/") or f"{first} + {second}"
        return f"{scope} ({self.scale.node.op_type} + {self.shift.node.op_type})"

    def as_batch_norm(self) -> Affine:
        """Both halves as the one BN they compute."""
        params = math.affine_as_batch_norm(self.scale.scale, self.shift.shift)
        return Affine(self.scale.node, self.scale.input, params, None)


def find_pairs(graph: OnnxGraph) -> list[Pair]:
    pairs = []
    for node in graph.nodes():
        if node.op_type != "Mul" or node.output[0] in graph.outputs:
            continue
        scale = affine_of(graph, node)
        users = graph.users(node.output[0])
        if scale is None or len(users) != 1 or users[0].op_type not in ("Add", "Sub"):
            continue
        shift = affine_of(graph, users[0])
        if (
            shift is not None
            and shift.input == node.output[0]
            and np.all(shift.scale == 1.0)
            and shift.axis_from_end == scale.axis_from_end
            and shift.shift.shape == scale.scale.shape
        ):
            pairs.append(Pair(scale, shift, _normalization_before(graph, scale.input)))
    return pairs


def _normalization_before(graph: OnnxGraph, tensor: str) -> str | None:
    producer = graph.producer(tensor)
    while producer is not None and producer.op_type in ("Reshape", "Identity"):
        producer = graph.producer(producer.input[0])
    if producer is not None and producer.op_type in NORMALIZATIONS:
        return producer.op_type
    return None


def is_bias(graph: OnnxGraph, node: onnx.NodeProto) -> bool:
    """``node`` (still in the graph) adds a constant right after a linear node whose
    output feeds nothing else."""
    if not graph.contains(node):
        return False
    affine = affine_of(graph, node)
    if affine is None:
        return False
    producer = graph.producer(affine.input)
    return (
        producer is not None
        and producer.op_type in LINEAR_OPS
        and len(graph.users(affine.input)) == 1
        and affine.input not in graph.outputs
    )
