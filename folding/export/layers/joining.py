"""keras.ops calls that split a tensor or join several: split, array_split, unstack,
concatenate and stack.

Split and concatenate work in whichever layout their input is in, mapping the
axis; unstack and stack read channels-last.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from folding.export.layers.base import OP_HANDLERS, cf_axis, common_layout, sole_input, unsupported
from folding.export.layers.operations import is_tensor, operand_names

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _axis_in(em: Emitter, tensor: int, axis: int) -> tuple[str, int]:
    """The tensor's current layout and where Keras axis ``axis`` sits in it."""
    rank = em.value(tensor).rank
    axis %= rank
    if em.layout_of(tensor) == "cf" and rank >= 3:
        return "cf", cf_axis(axis, rank)
    return "keras", axis


def _split_sizes(call: Call, size: int | None, sections: Any) -> list[int]:
    if isinstance(sections, int):
        if size is None:
            raise unsupported(call, "splitting a dynamic axis")
        if type(call.layer).__name__ == "ArraySplit":
            base, extra = divmod(size, sections)
            return [base + 1] * extra + [base] * (sections - extra)
        if size % sections:
            raise unsupported(call, f"axis of size {size} does not split into {sections}")
        return [size // sections] * sections
    bounds = [0, *[int(i) for i in sections]]
    if size is None:
        raise unsupported(call, "splitting a dynamic axis")
    bounds.append(size)
    return [max(min(b, size) - min(a, size), 0) for a, b in itertools.pairwise(bounds)]


def _split(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    axis = int(call.layer.axis) % em.value(tensor).rank
    sizes = _split_sizes(call, em.value(tensor).shape[axis], call.layer.indices_or_sections)
    layout, onnx_axis = _axis_in(em, tensor, axis)
    w = em.writer
    outputs = w.ops(
        "Split",
        [em.get(tensor, layout), w.ints(sizes, "sizes")],
        call.name,
        len(sizes),
        axis=onnx_axis,
    )
    for index, name in enumerate(outputs):
        em.set(call, name, layout, index=index)


def _unstack(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    rank = em.value(tensor).rank
    axis = int(call.layer.axis) % rank
    size = em.value(tensor).shape[axis]
    if size is None:
        raise unsupported(call, "unstacking a dynamic axis")
    w = em.writer
    parts = w.ops(
        "Split",
        [em.get(tensor, "keras"), w.ints([1] * size, "sizes")],
        call.name,
        size,
        axis=axis,
    )
    for index, part in enumerate(parts):
        em.set(call, w.op("Squeeze", [part, w.ints([axis], "axis")], "unstacked"), index=index)


def _concatenate(em: Emitter, call: Call) -> None:
    operands = list(call.args[0])
    tensors = [o.id for o in operands if is_tensor(o)]
    rank = em.value(tensors[0]).rank
    axis = int(call.layer.axis) % rank
    layout = common_layout(em, tensors) if len(tensors) == len(operands) else "keras"
    onnx_axis = cf_axis(axis, rank) if layout == "cf" else axis
    names = operand_names(em, call, operands, layout, rank)
    em.set(call, em.writer.op("Concat", names, call.name, axis=onnx_axis), layout)


def _stack(em: Emitter, call: Call) -> None:
    operands = list(call.args[0])
    rank = em.value(next(o.id for o in operands if is_tensor(o))).rank
    axis = int(call.layer.axis) % (rank + 1)
    w = em.writer
    names = operand_names(em, call, operands, "keras", rank)
    parts = [w.op("Unsqueeze", [n, w.ints([axis], "axis")], "part") for n in names]
    em.set(call, w.op("Concat", parts, call.name, axis=axis))


OP_HANDLERS.update(
    {
        "Split": _split,
        "ArraySplit": _split,
        "Unstack": _unstack,
        "Concatenate": _concatenate,
        "Stack": _stack,
    }
)
