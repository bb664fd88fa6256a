"""A BatchNormalization after a sum or a concatenation of convolutions: RepVGG-style
blocks in their training form that normalise the sum itself (RepViT's
``bn(dw3x3(x) + dw1x1(x) + x)``), and grouped convolutions written as one convolution
a group, concatenated (ResNeSt's split attention).

A concatenation along the channels is one BatchNormalization a part
(``math.channel_slice``), each folded into the convolution making that part.

``bn(a + b + ...) = scale * a + scale * b + ... + shift``: the scale folds into every
operand's convolution and the shift into one of them. An operand that is a tensor
with no weights of its own (the identity ``x``) first folds into a convolution of
that same tensor beside it, as the unit BatchNormalization ``x * 1 + 0``
(``folding.keras_graph.parallel``), and leaves the sum. Every operand's convolution
must feed only the sum, apply no activation and hold the channels on the
BatchNormalization's axis; the sum must feed only the BatchNormalization.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from folding import math
from folding.keras_graph.graph import Call
from folding.keras_graph.parallel import _check_sibling, _fold, drop_operand, is_sum

if TYPE_CHECKING:
    from folding.keras_graph.rules import BatchNormFolder


def fold_through_sum(
    folder: BatchNormFolder, bn: Call, total: Call, axis: int, params: math.BatchNormParams
) -> list[Call]:
    """Fold ``bn`` into every operand of the sum ``total`` that feeds it; returns the
    convolutions it went into. Raises NotFoldable (changing nothing) where it cannot."""
    from folding.keras_graph.rules import NotFoldable

    if not is_sum(total):
        raise NotFoldable(f"'{total.name}' is not a sum")
    graph = folder.graph
    folder._sole_consumer(total.outputs[0], f"the output of '{total.name}'")
    operands = list(total.input_ids)
    if len(set(operands)) != len(operands):
        raise NotFoldable(f"'{total.name}' adds one tensor to itself")
    shape = graph.shapes[total.outputs[0]]
    if any(graph.shapes[tensor] != shape for tensor in operands):
        raise NotFoldable(f"'{total.name}' broadcasts its operands")
    convs, identities = [], []
    for tensor in operands:
        producer = graph.producers().get(tensor)
        try:
            if producer is None:
                raise NotFoldable("is a model input")
            folder._check_backward(producer, tensor, axis, len(shape))
        except NotFoldable:
            identities.append(tensor)
        else:
            convs.append(producer)
    siblings: dict[int, Call] = {}
    for tensor in identities:
        reasons = []
        for conv in convs:
            try:
                _check_sibling(folder, conv, tensor, axis)
            except NotFoldable as reason:
                reasons.append(f"'{conv.name}' {reason}")
                continue
            if conv in siblings.values():
                continue
            siblings[tensor] = conv
            break
        else:
            producer = graph.producers().get(tensor)
            what = f"'{producer.name}'" if producer is not None else "the model input"
            why = "; ".join(reasons) or "no operand is a convolution"
            raise NotFoldable(
                f"'{total.name}' adds the output of {what}, which has no weights, and no "
                f"convolution of it beside ({why})"
            )
    if not convs:
        raise NotFoldable(f"no operand of '{total.name}' has weights to fold into")
    identity = math.affine_as_batch_norm(np.ones(params.channels), np.zeros(params.channels))
    for tensor, conv in siblings.items():
        _fold(folder, conv, identity)
        drop_operand(graph, total, tensor)
    scale_only = math.affine_as_batch_norm(params.scale(), np.zeros(params.channels))
    for index, conv in enumerate(convs):
        folder._fold_into(conv, params if index == 0 else scale_only)
    return convs


def fold_through_concat(
    folder: BatchNormFolder, bn: Call, concat: Call, axis: int, params: math.BatchNormParams
) -> list[Call]:
    """Fold ``bn`` into the convolution making each part of the concatenation
    ``concat`` that feeds it; returns them. Raises NotFoldable (changing nothing)."""
    from folding.keras_graph.rules import NotFoldable

    graph = folder.graph
    rank = len(graph.shapes[concat.outputs[0]])
    if int(getattr(concat.layer, "axis", -1)) % rank != axis:
        raise NotFoldable(f"'{concat.name}' joins another axis than the channels")
    folder._sole_consumer(concat.outputs[0], f"the output of '{concat.name}'")
    operands = list(concat.input_ids)
    if len(set(operands)) != len(operands):
        raise NotFoldable(f"'{concat.name}' joins one tensor twice")
    producers = []
    for tensor in operands:
        producer = graph.producers().get(tensor)
        if producer is None:
            raise NotFoldable(f"'{concat.name}' joins a model input")
        folder._check_backward(producer, tensor, axis, rank)
        producers.append(producer)
    widths = [graph.shapes[tensor][axis] for tensor in operands]
    if None in widths or sum(widths) != params.channels:
        raise NotFoldable(f"'{concat.name}' joins parts of unknown or other widths {widths}")
    start = 0
    for producer, width in zip(producers, widths, strict=True):
        folder._fold_into(producer, math.channel_slice(params, start, start + width))
        start += width
    return producers
