"""keras.ops calls that move elements without computing: reshape, transpose,
moveaxis, swapaxes, expand_dims, squeeze, ravel, tile, repeat, broadcast_to, flip
and roll.

They read channels-last, except that a transpose undoing the channels-first
layout (model code moving channels to axis 1) costs nothing: it is the
channels-first tensor itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from folding.export.layers.base import OP_HANDLERS, SMALL, sole_input, unsupported
from folding.export.layers.shape import reshape_to

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _reshape(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    shape = list(call.layer.newshape)
    target = []
    for index, dim in enumerate(shape):
        if dim is None:
            dim = 0 if index == 0 else -1
        target.append(int(dim))
    if target.count(-1) > 1:
        raise unsupported(call, f"target shape {shape} has several unknown axes")
    in_shape = em.value(tensor).shape
    if (
        target
        and target[0] == -1
        and in_shape[0] is None
        and all(d > 0 for d in target[1:])
        and None not in in_shape[1:]
        and np.prod(target[1:]) == np.prod(in_shape[1:])
    ):
        # the batch axis stays the batch axis; a -1 that folds other axes into the batch
        # (a (batch * patches, ...) reshape, as MobileViT's unfolding is) stays -1
        target[0] = 0
    reshape_to(em, call, tensor, target)


def _transpose(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    rank = em.value(tensor).rank
    axes = call.layer.axes
    perm = list(range(rank))[::-1] if axes is None else [int(a) % rank for a in axes]
    _permute(em, call, tensor, perm)


def _permute(em: Emitter, call: Call, tensor: int, perm: list[int]) -> None:
    from folding.export.direct import to_keras

    rank = len(perm)
    if em.layout_of(tensor) == "cf" and rank >= 3:
        back = to_keras(rank)
        cf_perm = [back[p] for p in perm]
        x = em.get(tensor, "cf")
        if cf_perm == list(range(rank)):
            em.set(call, x)
        else:
            em.set(call, em.writer.op("Transpose", [x], call.name, perm=cf_perm))
        return
    y = em.writer.op("Transpose", [em.get(tensor, "keras")], call.name, perm=perm)
    em.set(call, y)


def _moveaxis(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    rank = em.value(tensor).rank
    sources = call.layer.source
    targets = call.layer.destination
    sources = [
        int(s) % rank for s in (sources if isinstance(sources, (list, tuple)) else [sources])
    ]
    targets = [
        int(t) % rank for t in (targets if isinstance(targets, (list, tuple)) else [targets])
    ]
    order = [a for a in range(rank) if a not in sources]
    for target, source in sorted(zip(targets, sources, strict=True)):
        order.insert(target, source)
    _permute(em, call, tensor, order)


def _swapaxes(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    rank = em.value(tensor).rank
    perm = list(range(rank))
    first, second = int(call.layer.axis1) % rank, int(call.layer.axis2) % rank
    perm[first], perm[second] = perm[second], perm[first]
    _permute(em, call, tensor, perm)


def _expand_dims(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    axis = call.layer.axis
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    out_rank = em.value(tensor).rank + len(axes)
    w = em.writer
    axes = sorted(int(a) % out_rank for a in axes)
    em.set(call, w.op("Unsqueeze", [em.get(tensor, "keras"), w.ints(axes, "axes")], call.name))


def _squeeze(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    shape = em.value(tensor).shape
    axis = call.layer.axis
    if axis is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:
        axes = sorted(
            int(a) % len(shape) for a in (axis if isinstance(axis, (list, tuple)) else [axis])
        )
    w = em.writer
    em.set(call, w.op("Squeeze", [em.get(tensor, "keras"), w.ints(axes, "axes")], call.name))


def _ravel(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    w = em.writer
    em.set(call, w.op("Reshape", [em.get(tensor, "keras"), w.ints([-1], "flat")], call.name))


def _tile(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    rank = em.value(tensor).rank
    repeats = [int(r) for r in np.asarray(call.layer.repeats).reshape(-1)]
    w = em.writer
    x = em.get(tensor, "keras")
    if len(repeats) > rank:
        shape = [1] * (len(repeats) - rank)
        x = w.op("Unsqueeze", [x, w.ints(list(range(len(shape))), "axes")], "lifted")
    repeats = [1] * (rank - len(repeats)) + repeats
    em.set(call, w.op("Tile", [x, w.ints(repeats, "repeats")], call.name))


def _repeat(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    shape = list(em.value(tensor).shape)
    axis = call.layer.axis
    repeats = np.asarray(call.layer.repeats).reshape(-1)
    if axis is None or repeats.size != 1:
        raise unsupported(call, "repeating without an axis or by per-element counts")
    axis = int(axis) % len(shape)
    count = int(repeats[0])
    if any(d is None for i, d in enumerate(shape) if i != 0):
        raise unsupported(call, "repeating a tensor with dynamic axes")
    w = em.writer
    x = em.get(tensor, "keras")
    expanded = w.op("Unsqueeze", [x, w.ints([axis + 1], "axis")], "expanded")
    tile = [1] * (len(shape) + 1)
    tile[axis + 1] = count
    tiled = w.op("Tile", [expanded, w.ints(tile, "repeats")], "tiled")
    target = [0, *shape[1:]]
    target[axis] = -1 if axis == 0 else shape[axis] * count
    em.set(call, w.op("Reshape", [tiled, w.ints(target, "shape")], call.name))


def _broadcast_to(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    shape = [1 if d is None else int(d) for d in call.layer.shape]
    w = em.writer
    em.set(call, w.op("Expand", [em.get(tensor, "keras"), w.ints(shape, "shape")], call.name))


def _flip(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    rank = em.value(tensor).rank
    axis = call.layer.axis
    axes = list(range(rank)) if axis is None else [int(a) % rank for a in np.ravel(axis)]
    w = em.writer
    inputs = [em.get(tensor, "keras"), w.ints([-1] * len(axes), "starts")]
    inputs += [w.ints([SMALL] * len(axes), "ends"), w.ints(axes, "axes")]
    em.set(call, w.op("Slice", [*inputs, w.ints([-1] * len(axes), "steps")], call.name))


def _roll(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    shape = em.value(tensor).shape
    shift, axis = call.layer.shift, call.layer.axis
    if axis is None or np.ndim(shift) or np.ndim(axis):
        raise unsupported(call, "rolling several axes or the flattened tensor")
    axis = int(axis) % len(shape)
    size = shape[axis]
    if size is None:
        raise unsupported(call, "rolling a dynamic axis")
    cut = (-int(shift)) % size
    w = em.writer
    x = em.get(tensor, "keras")

    def part(start: int, end: int) -> str:
        inputs = [x, w.ints([start], "s"), w.ints([end], "e"), w.ints([axis], "a")]
        return w.op("Slice", inputs, "part")

    em.set(call, w.op("Concat", [part(cut, size), part(0, cut)], call.name, axis=axis))


OP_HANDLERS.update(
    {
        "Reshape": _reshape,
        "Transpose": _transpose,
        "Moveaxis": _moveaxis,
        "Swapaxes": _swapaxes,
        "ExpandDims": _expand_dims,
        "Squeeze": _squeeze,
        "Ravel": _ravel,
        "Tile": _tile,
        "Repeat": _repeat,
        "BroadcastTo": _broadcast_to,
        "Flip": _flip,
        "Roll": _roll,
    }
)
