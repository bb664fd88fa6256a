"""keras.ops calls that pick elements by position: ``x[...]`` indexing, slice, take,
take_along_axis, and the triangles tril and triu. All read channels-last."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto

from folding.export.layers.base import BIG, OP_HANDLERS, SMALL, Handler, sole_input, unsupported
from folding.export.layers.operations import constant_array, is_tensor

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _key_items(call: Call, key: Any, rank: int) -> list[Any]:
    items = list(key) if isinstance(key, (tuple, list)) else [key]
    for item in items:
        if is_tensor(item) or not (
            item is None or item is Ellipsis or isinstance(item, (int, np.integer, slice))
        ):
            raise unsupported(call, f"indexing with {type(item).__name__}")
        if isinstance(item, slice) and any(
            not (v is None or isinstance(v, (int, np.integer)))
            for v in (item.start, item.stop, item.step)
        ):
            raise unsupported(call, "a slice with tensor bounds")
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if items.count(Ellipsis) > 1 or consumed > rank:
        raise unsupported(call, f"index {key!r} for a rank-{rank} tensor")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (rank - consumed)
        return items
    return items + [slice(None)] * (rank - consumed)


def _source(em: Emitter, call: Call, value: Any) -> tuple[str, int]:
    """The indexed operand as an ONNX name and its rank: a tensor of the graph, or a
    constant (a layer's own variable, ``ops.take(self.embeddings, ids)``)."""
    if is_tensor(value):
        return em.get(value.id, "keras"), em.value(value.id).rank
    array = constant_array(call, value)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    return em.writer.const(array, "table", array.dtype), array.ndim


def _get_item(em: Emitter, call: Call) -> None:
    source, rank = _source(em, call, call.args[0])
    key = call.args[1] if len(call.args) > 1 else call.kwargs["key"]
    items = _key_items(call, key, rank)
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = out = 0
    for item in items:
        if item is None:
            unsqueeze.append(out)
            out += 1
            continue
        if isinstance(item, slice):
            step = 1 if item.step is None else int(item.step)
            start = item.start if item.start is not None else (0 if step > 0 else BIG)
            stop = item.stop if item.stop is not None else (BIG if step > 0 else SMALL)
            if (start, stop, step) != (0, BIG, 1):
                starts.append(int(start)), ends.append(int(stop))
                axes.append(axis), steps.append(step)
            out += 1
        else:
            index = int(item)
            starts.append(index), ends.append(index + 1 if index != -1 else BIG)
            axes.append(axis), steps.append(1)
            squeeze.append(axis)
        axis += 1
    w = em.writer
    y = source
    if axes:
        inputs = [y, w.ints(starts, "starts"), w.ints(ends, "ends"), w.ints(axes, "axes")]
        y = w.op("Slice", [*inputs, w.ints(steps, "steps")], call.name)
    if squeeze:
        y = w.op("Squeeze", [y, w.ints(squeeze, "axes")], "indexed")
    if unsqueeze:
        y = w.op("Unsqueeze", [y, w.ints(unsqueeze, "axes")], "new_axes")
    em.set(call, y)


def _slice(em: Emitter, call: Call) -> None:
    source, _ = _source(em, call, call.args[0])
    start_indices = call.args[1] if len(call.args) > 1 else call.kwargs["start_indices"]
    if is_tensor(start_indices):
        raise unsupported(call, "tensor start indices")
    starts = [int(s) for s in constant_array(call, start_indices).reshape(-1)]
    ends = [s + int(d) for s, d in zip(starts, call.layer.shape, strict=True)]
    w = em.writer
    inputs = [source, w.ints(starts, "starts"), w.ints(ends, "ends")]
    em.set(call, w.op("Slice", inputs, call.name))


def _take(em: Emitter, call: Call) -> None:
    x, _ = _source(em, call, call.args[0])
    indices = call.args[1] if len(call.args) > 1 else call.kwargs["indices"]
    axis = call.layer.axis
    w = em.writer
    if axis is None:
        x, axis = w.op("Reshape", [x, w.ints([-1], "flat")], "flat"), 0
    if is_tensor(indices):
        index = w.op("Cast", [em.get(indices.id, "keras")], "indices", to=TensorProto.INT64)
    else:
        index = w.const(constant_array(call, indices).astype(np.int64), "indices", np.int64)
    op_type = "GatherElements" if type(call.layer).__name__ == "TakeAlongAxis" else "Gather"
    em.set(call, w.op(op_type, [x, index], call.name, axis=int(axis)))


def _triangle(upper: int) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensor = sole_input(call)
        w = em.writer
        k = w.const(np.asarray(int(call.layer.k), np.int64), "k", np.int64)
        em.set(call, w.op("Trilu", [em.get(tensor, "keras"), k], call.name, upper=upper))

    return handler


OP_HANDLERS.update(
    {
        "GetItem": _get_item,
        "Slice": _slice,
        "Take": _take,
        "TakeAlongAxis": _take,
        "Tril": _triangle(0),
        "Triu": _triangle(1),
    }
)
