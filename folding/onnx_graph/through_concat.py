"""Rule: a BN after a ``Concat`` of convolutions (MixConv) is one BN per convolution.

When every input of the Concat is a ``Conv`` / ``ConvTranspose`` output that
feeds nothing else, and the Concat joins their channels, channels
``start:stop`` of the BN fold into the convolution that made them. Each part is
checked before any is folded.
"""

from __future__ import annotations

import onnx

from folding.onnx_graph import into_conv
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, article, attribute, node_key
from folding.onnx_graph.plan import Plan


def plan(graph: OnnxGraph, affine: Affine, concat: onnx.NodeProto) -> Plan:
    name = node_key(concat)
    graph.sole_user(concat.output[0], f"the output of '{name}'")
    if affine.axis_from_end is not None:
        raise NotFoldable("it scales the last axis, not the channels the Concat joins")
    if len(set(concat.input)) != len(concat.input):
        raise NotFoldable(f"'{name}' joins one tensor more than once")
    axis = int(attribute(concat, "axis", 0))
    parts, start = [], 0
    for tensor in concat.input:
        producer = graph.producer(tensor)
        if producer is None or producer.op_type not in ("Conv", "ConvTranspose"):
            what = "a graph input" if producer is None else article(producer.op_type)
            raise NotFoldable(
                f"'{name}' is a Concat whose input '{tensor}' is {what}, not a convolution"
            )
        channels = into_conv.output_channels(graph, producer)
        rank = graph.constant(producer.input[1]).ndim
        if axis not in (1, 1 - rank):
            raise NotFoldable(f"'{name}' joins axis {axis}, not the channels")
        if start + channels > affine.params.channels:
            raise NotFoldable(f"'{name}' joins more channels than the BN has")
        parts.append(into_conv.plan(graph, affine.part(start, start + channels), producer))
        start += channels
    if start != affine.params.channels:
        raise NotFoldable(f"'{name}' joins {start} channels; the BN has {affine.params.channels}")

    def apply() -> list[onnx.NodeProto]:
        return [target for part in parts for target in part()]

    return apply
