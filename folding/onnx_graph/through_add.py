"""Rule: a BN after a sum of convolutions (and maybe their own input) folds into them
(RepViT's ``bn(conv(x) + conv1(x) + x)``, a BN after a RepVGG-style sum of branches).

``bn(a + b + x) = bn(a) + scale * b + scale * x``: every convolution in the sum of
``Add`` nodes (each read by nothing else) takes the BN's scale; the first takes its
shift too (``folding.math.fold_into_preceding``). A term that is no convolution must
be the input of one of them with a tap that reads it in place: it goes into that
convolution as ``scale`` on that tap (``folding.math.fold_identity_branch``), and its
``Add`` goes. Each part is checked before any is folded.
"""

from __future__ import annotations

import numpy as np
import onnx

from folding import math
from folding.onnx_graph import into_conv, into_sibling
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, attribute, node_key
from folding.onnx_graph.plan import Plan


def plan(graph: OnnxGraph, affine: Affine, add: onnx.NodeProto) -> Plan:
    if affine.axis_from_end is not None:
        raise NotFoldable("it scales the last axis, not the channel axis 1")
    adds, terms, pending = [], [], [add]
    while pending:
        node = pending.pop()
        if len(node.input) != 2 or node.input[0] == node.input[1]:
            raise NotFoldable(f"'{node_key(node)}' is not a sum of two tensors")
        graph.sole_user(node.output[0], f"the output of '{node_key(node)}'")
        adds.append(node)
        for tensor in node.input:
            producer = graph.producer(tensor)
            inner = producer is not None and producer.op_type == "Add" and len(adds) < 16
            if inner and len(graph.users(tensor)) == 1 and tensor not in graph.outputs:
                pending.append(producer)
            else:
                terms.append((node, tensor, producer))
    # a term is a convolution's own output only when nothing else reads it; a conv's
    # output read elsewhere too is the identity term (RepViT's first block, where the
    # input of the sum is the stem's convolution)
    own = {
        tensor
        for _, tensor, p in terms
        if p is not None
        and p.op_type == "Conv"
        and len(graph.users(tensor)) == 1
        and tensor not in graph.outputs
    }
    convs = [p for _, tensor, p in terms if tensor in own]
    others = [(node, tensor) for node, tensor, _ in terms if tensor not in own]
    name = node_key(add)
    if not convs or len(others) > 1:
        raise NotFoldable(f"'{name}' is an Add, which has no weights to fold into")
    scale_only = Affine(
        affine.node,
        affine.input,
        math.affine_as_batch_norm(affine.scale, np.zeros_like(affine.scale)),
        None,
        affine.operand_rank,
        affine.trailing,
    )
    parts = [
        into_conv.plan(graph, affine if i == 0 else scale_only, c) for i, c in enumerate(convs)
    ]
    identity = None
    if others:
        reader, tensor = others[0]
        for conv in convs:
            if conv.input[0] == tensor and graph.constant(tensor) is None:
                try:
                    identity = (conv, into_sibling._identity_tap(graph, affine, conv))
                    break
                except NotFoldable:
                    continue
        if identity is None:
            raise NotFoldable(
                f"'{name}' adds '{tensor}', which no convolution in it reads in place"
            )

    def apply() -> list[onnx.NodeProto]:
        for part in parts:
            part()
        if identity is not None:
            conv, centre = identity
            identity_scale = math.affine_as_batch_norm(affine.scale, np.zeros_like(affine.scale))
            weight = graph.constant(conv.input[1])
            bias = graph.constant(conv.input[2])
            new_weight, new_bias = math.fold_identity_branch(
                weight, bias, identity_scale, int(attribute(conv, "group", 1)), centre
            )
            graph.set_constant(conv, 1, new_weight)
            graph.set_constant(conv, 2, new_bias)
            graph.bypass(reader, reader.input[1] if reader.input[0] == tensor else reader.input[0])
        return convs

    return apply
