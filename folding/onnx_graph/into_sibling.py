"""Rule: a BN of a convolution's own input, added to that convolution's output, goes
into the convolution (RepVGG's and MobileOne's identity branch: ``conv(x) + bn(x)``;
FastViT's RepMixer subtracts it: ``mixer(x) - norm(x)``).

``bn(x) = x * scale + shift`` is itself a convolution: ``scale`` on each channel's own
tap at the output's position, zero elsewhere, and bias ``shift``
(``folding.math.fold_identity_branch``). So when the BN's output is read only by an
``Add`` (or a ``Sub`` that subtracts it: ``-scale``, ``-shift``) whose other operand
is such a convolution of the same ``x`` (or an ``Add`` of branches, one of them that
convolution), each read by nothing else, the BN folds into it exactly and the ``Add``
/ ``Sub`` goes. The convolution must map ``C`` channels to ``C``, with stride 1 and
explicit pads that keep the size, starting a whole number of dilations before the tap
that reads ``x`` in place; a bias computed at run time keeps the BN.
"""

from __future__ import annotations

import onnx

from folding import math
from folding.onnx_graph.affine import Affine
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, article, attribute, node_key
from folding.onnx_graph.plan import Plan


def plan(graph: OnnxGraph, affine: Affine) -> Plan:
    output = affine.node.output[0]
    add = graph.sole_user(output, "its output")
    if add.op_type not in ("Add", "Sub") or len(add.input) != 2 or add.input[0] == add.input[1]:
        raise NotFoldable(f"it feeds {article(add.op_type)}, not an Add beside a convolution")
    if add.op_type == "Sub" and add.input[0] == output:
        raise NotFoldable(f"it is what '{node_key(add)}' subtracts from, not what it subtracts")
    if affine.axis_from_end is not None:
        raise NotFoldable("it scales the last axis, not the channel axis 1")
    other = add.input[1] if add.input[0] == output else add.input[0]
    sign = -1.0 if add.op_type == "Sub" else 1.0
    conv, centre, reasons = None, None, []
    pending = [other]
    while pending and conv is None:
        producer = graph.producer(pending.pop())
        if producer is None:
            continue
        if producer.op_type == "Add" and len(producer.input) == 2:
            graph.sole_user(producer.output[0], f"the output of '{node_key(producer)}'")
            pending.extend(producer.input)
        elif producer.op_type == "Conv" and producer.input[0] == affine.input:
            try:
                centre = _identity_tap(graph, affine, producer)
                conv = producer
            except NotFoldable as reason:
                reasons.append(str(reason))
    if conv is None:
        detail = f" ({'; '.join(reasons)})" if reasons else ""
        raise NotFoldable(f"'{node_key(add)}' adds no convolution of its input{detail}")
    weight = graph.constant(conv.input[1])
    bias = graph.optional_constant(conv, 2, "bias")
    groups = int(attribute(conv, "group", 1))

    def apply() -> list[onnx.NodeProto]:
        flat_bias = None if bias is None else bias.reshape(-1)
        new_weight, new_bias = math.fold_identity_branch(
            weight, flat_bias, affine.params, groups, centre, sign
        )
        graph.set_constant(conv, 1, new_weight)
        graph.set_constant(conv, 2, new_bias)
        graph.bypass(add, other)
        return [conv]

    return apply


def _identity_tap(graph: OnnxGraph, affine: Affine, conv: onnx.NodeProto) -> tuple[int, ...]:
    """The kernel position that reads the input at the output's own position."""
    name = node_key(conv)
    graph.sole_user(conv.output[0], f"the output of '{name}'")
    weight = graph.constant(conv.input[1])
    if weight is None:
        raise NotFoldable(f"the weight of '{name}' is not a constant")
    groups = int(attribute(conv, "group", 1))
    channels = affine.params.channels
    if weight.shape[0] != channels or weight.shape[1] * groups != channels:
        raise NotFoldable(f"'{name}' does not map {channels} channels to {channels}")
    if not affine.fits(weight.ndim):
        raise NotFoldable(f"its constant broadcasts over other axes of '{name}' than its channels")
    spatial = weight.ndim - 2
    kernel = list(weight.shape[2:])
    auto_pad = attribute(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise NotFoldable(f"'{name}' pads with auto_pad={auto_pad}")
    strides = list(attribute(conv, "strides", [1] * spatial))
    dilations = list(attribute(conv, "dilations", [1] * spatial))
    pads = list(attribute(conv, "pads", [0] * 2 * spatial)) if auto_pad == "NOTSET" else []
    pads = pads or [0] * 2 * spatial
    if any(s != 1 for s in strides):
        raise NotFoldable(f"'{name}' has strides {strides}")
    centre = []
    for axis in range(spatial):
        begin, end, size, step = pads[axis], pads[axis + spatial], kernel[axis], dilations[axis]
        if begin % step or begin // step >= size or begin + end != (size - 1) * step:
            raise NotFoldable(f"'{name}' pads {pads}: no tap reads its input in place")
        centre.append(begin // step)
    graph.optional_constant(conv, 2, "bias")
    return tuple(centre)
