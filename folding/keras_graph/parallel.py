"""A BatchNormalization added to a convolution of its own input: RepVGG's and
MobileOne's identity ("skip") branch, ``conv(x) + bn(x)``.

``bn(x)`` is itself a convolution whose kernel holds ``scale`` on each channel's
own centre tap, so it folds into the convolution beside it (its shift into the
bias: ``folding.math.fold_identity_branch``), and the sum loses that operand. The
convolution must read ``x`` (or ``x`` zero-padded by half its kernel, as kimm pads
before a "valid" convolution) at stride 1 without dilation, with its centre tap
on each pixel ("same" padding and an odd kernel, or a 1x1 kernel), as many
output channels as input channels, no activation, and feed only that sum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from folding import math
from folding.keras_graph.graph import Call, Graph, Ref

if TYPE_CHECKING:
    from folding.keras_graph.rules import BatchNormFolder

CONVOLUTIONS = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D)


class NotBeside(Exception):
    """The BatchNormalization is not added to anything: this rule does not apply."""


def is_sum(call: Call) -> bool:
    """An ``Add`` layer, or the ``keras.ops.add`` / ``+`` operation of two tensors."""
    if type(call.layer) is layers.Add:
        return True
    return type(call.layer).__name__ == "Add" and len(call.input_ids) == 2


def fold_into_sibling(folder: BatchNormFolder, bn: Call, axis: int, params) -> Call:
    """Fold ``bn`` into a convolution of its own input that its sum adds it to; the
    sum then drops ``bn``'s operand. Returns the convolution's call."""
    from folding.keras_graph.rules import NotFoldable

    graph = folder.graph
    try:
        total = folder._sole_consumer(bn.outputs[0], "its output")
    except NotFoldable as reason:
        raise NotBeside(str(reason)) from None
    if not is_sum(total):
        raise NotBeside(f"it feeds '{total.name}', which is not a sum")
    operands = [tensor for tensor in total.input_ids if tensor != bn.outputs[0]]
    reasons = []
    for operand in operands:
        conv = graph.producers().get(operand)
        if conv is None:
            continue
        try:
            _check_sibling(folder, conv, bn.first_input, axis)
        except NotFoldable as reason:
            reasons.append(f"'{conv.name}' {reason}")
            continue
        _fold(folder, conv, params)
        drop_operand(graph, total, bn.outputs[0])
        graph.drop(bn)
        return conv
    why = "; ".join(reasons) or "no convolution of its own input is added to it"
    raise NotFoldable(f"the sum '{total.name}' has no convolution it can fold into ({why})")


def _check_sibling(folder: BatchNormFolder, conv: Call, source: int, axis: int) -> None:
    """``conv`` can take in ``source`` added beside it, as a kernel tap of its own."""
    from folding.keras_graph.rules import NotFoldable, _channel_axis

    layer = conv.layer
    if type(layer) not in CONVOLUTIONS:
        raise NotFoldable(f"is {type(layer).__name__}, not a convolution")
    if getattr(layer, "activation", None) is not None and layer.activation.__name__ != "linear":
        raise NotFoldable("applies an activation")
    rank = len(folder.graph.shapes[source])
    if axis != _channel_axis(layer, rank):
        raise NotFoldable("has its channels on another axis")
    kernel_size = tuple(layer.kernel_size)
    if any(stride != 1 for stride in layer.strides) or any(
        rate != 1 for rate in layer.dilation_rate
    ):
        raise NotFoldable("has a stride or a dilation")
    if any(size % 2 == 0 for size in kernel_size):
        raise NotFoldable("has an even kernel, with no centre tap")
    read = conv.first_input
    padded = folder.graph.producers().get(read)
    if read == source:
        if layer.padding != "same" and any(size != 1 for size in kernel_size):
            raise NotFoldable(f"uses padding '{layer.padding}' with a kernel larger than 1")
    elif (
        padded is not None
        and type(padded.layer) in (layers.ZeroPadding1D, layers.ZeroPadding2D)
        and padded.first_input == source
        and layer.padding == "valid"
    ):
        wanted = tuple((size // 2, size // 2) for size in kernel_size)
        padding = padded.layer.padding
        pairs = (tuple(padding),) if type(padded.layer) is layers.ZeroPadding1D else _pairs(padding)
        if pairs != wanted:
            raise NotFoldable("reads its input padded otherwise than by half its kernel")
    else:
        raise NotFoldable("does not read the BatchNormalization's input")
    if isinstance(layer, layers.DepthwiseConv2D):
        if layer.depth_multiplier != 1:
            raise NotFoldable("has a depth multiplier")
    elif layer.filters != folder.graph.shapes[source][axis]:
        raise NotFoldable("has another number of output channels than input channels")
    if getattr(layer, "groups", 1) > 1 and layer.filters % layer.groups:
        raise NotFoldable("has groups that do not divide its channels")
    folder._sole_consumer(conv.outputs[0], f"the output of '{conv.name}'")
    folder._check_exclusive(conv)


def _pairs(padding) -> tuple:
    return tuple(
        tuple(side) if isinstance(side, (tuple, list)) else (side, side) for side in padding
    )


def _fold(folder, conv: Call, params: math.BatchNormParams) -> None:
    layer = conv.layer
    edit = folder._edit(conv)
    kernel = edit.arrays["kernel"]  # Keras: [*k, in / groups, out]; depthwise [*k, in, 1]
    spatial = kernel.ndim - 2
    centre = tuple(size // 2 for size in layer.kernel_size)
    if isinstance(layer, layers.DepthwiseConv2D):
        channels_first = np.moveaxis(kernel, (spatial, spatial + 1), (0, 1))  # [in, 1, *k]
        groups = channels_first.shape[0]
    else:
        channels_first = np.moveaxis(kernel, (spatial, spatial + 1), (1, 0))  # [out, in/g, *k]
        groups = getattr(layer, "groups", 1)
    folded, bias = math.fold_identity_branch(
        channels_first, edit.arrays.get("bias"), params, groups, centre
    )
    if isinstance(layer, layers.DepthwiseConv2D):
        edit.arrays["kernel"] = np.moveaxis(folded, (0, 1), (spatial, spatial + 1))
    else:
        edit.arrays["kernel"] = np.moveaxis(folded, (1, 0), (spatial, spatial + 1))
    edit.arrays["bias"] = bias


def drop_operand(graph: Graph, total: Call, dropped: int) -> None:
    """``total`` without the operand ``dropped`` (a sum of one: replaced by the other)."""
    if type(total.layer) is layers.Add:
        (inputs, *rest) = total.args
        kept = [ref for ref in inputs if not (isinstance(ref, Ref) and ref.id == dropped)]
        if len(kept) > 1:
            graph.set_args(total, (kept, *rest))
            return
        remaining = kept[0].id
    else:
        remaining = next(tensor for tensor in total.input_ids if tensor != dropped)
    graph.replace_tensor(total.outputs[0], remaining)
    graph.drop(total)
