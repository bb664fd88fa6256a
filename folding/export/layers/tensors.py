"""Shape and indexing keras.ops calls (reshape, transpose, split, concatenate, slicing,
pad, resize, ...) and the products (matmul, einsum).

Operations along one axis (split, concatenate, pad, resize) work in whichever
layout their input is in, mapping the axis; the rest read channels-last. A
transpose that undoes the channels-first layout (model code moving channels to
axis 1) costs nothing: it is the channels-first tensor itself.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto, helper

from folding.export.layers.base import (
    OP_HANDLERS,
    Handler,
    Refused,
    cf_axis,
    common_layout,
    inputs_of,
    unsupported,
)
from folding.export.layers.operations import constant_array, is_tensor, operand_names

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call

BIG = np.iinfo(np.int64).max
SMALL = np.iinfo(np.int64).min


def _single(call: Call) -> int:
    tensors = inputs_of(call)
    if len(tensors) != 1:
        raise unsupported(call, f"expected one tensor argument, got {len(tensors)}")
    return tensors[0]


def _axis_in(em: Emitter, tensor: int, axis: int) -> tuple[str, int]:
    """The tensor's current layout and where Keras axis ``axis`` sits in it."""
    rank = em.value(tensor).rank
    axis %= rank
    if em.layout_of(tensor) == "cf" and rank >= 3:
        return "cf", cf_axis(axis, rank)
    return "keras", axis


def _reshape(em: Emitter, call: Call) -> None:
    tensor = _single(call)
    shape = list(call.layer.newshape)
    target = []
    for index, dim in enumerate(shape):
        if dim is None:
            dim = 0 if index == 0 else -1
        target.append(int(dim))
    if target.count(-1) > 1:
        raise unsupported(call, f"target shape {shape} has several unknown axes")
    in_shape = em.value(tensor).shape
    if target and target[0] == -1 and in_shape[0] is None and all(d > 0 for d in target[1:]):
        target[0] = 0  # the batch axis stays the batch axis
    from folding.export.layers.shape import reshape_to

    reshape_to(em, call, tensor, target)


def _transpose(em: Emitter, call: Call) -> None:
    tensor = _single(call)
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
    tensor = _single(call)
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
    tensor = _single(call)
    rank = em.value(tensor).rank
    perm = list(range(rank))
    first, second = int(call.layer.axis1) % rank, int(call.layer.axis2) % rank
    perm[first], perm[second] = perm[second], perm[first]
    _permute(em, call, tensor, perm)


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
    tensor = _single(call)
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
    tensor = _single(call)
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


def _expand_dims(em: Emitter, call: Call) -> None:
    tensor = _single(call)
    axis = call.layer.axis
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    out_rank = em.value(tensor).rank + len(axes)
    w = em.writer
    axes = sorted(int(a) % out_rank for a in axes)
    em.set(call, w.op("Unsqueeze", [em.get(tensor, "keras"), w.ints(axes, "axes")], call.name))


def _squeeze(em: Emitter, call: Call) -> None:
    tensor = _single(call)
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
    tensor = _single(call)
    w = em.writer
    em.set(call, w.op("Reshape", [em.get(tensor, "keras"), w.ints([-1], "flat")], call.name))


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


def _get_item(em: Emitter, call: Call) -> None:
    tensor = call.args[0].id
    key = call.args[1] if len(call.args) > 1 else call.kwargs["key"]
    rank = em.value(tensor).rank
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
    y = em.get(tensor, "keras")
    if axes:
        inputs = [y, w.ints(starts, "starts"), w.ints(ends, "ends"), w.ints(axes, "axes")]
        y = w.op("Slice", [*inputs, w.ints(steps, "steps")], call.name)
    if squeeze:
        y = w.op("Squeeze", [y, w.ints(squeeze, "axes")], "indexed")
    if unsqueeze:
        y = w.op("Unsqueeze", [y, w.ints(unsqueeze, "axes")], "new_axes")
    em.set(call, y)


def _slice(em: Emitter, call: Call) -> None:
    tensor = call.args[0].id
    start_indices = call.args[1] if len(call.args) > 1 else call.kwargs["start_indices"]
    if is_tensor(start_indices):
        raise unsupported(call, "tensor start indices")
    starts = [int(s) for s in constant_array(call, start_indices).reshape(-1)]
    ends = [s + int(d) for s, d in zip(starts, call.layer.shape, strict=True)]
    w = em.writer
    inputs = [em.get(tensor, "keras"), w.ints(starts, "starts"), w.ints(ends, "ends")]
    em.set(call, w.op("Slice", inputs, call.name))


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad(em: Emitter, call: Call) -> None:
    from folding.export.direct import to_cf

    tensor = call.args[0].id
    op = call.layer
    rank = em.value(tensor).rank
    mode = PAD_MODES.get(op.mode)
    if mode is None or (mode == "wrap" and em.writer.opset < 19):
        raise unsupported(call, f"padding mode {op.mode!r}")
    pairs = np.broadcast_to(np.asarray(op.pad_width, dtype=np.int64), (rank, 2))
    layout = em.layout_of(tensor) if rank >= 3 else "keras"
    if layout == "cf":
        pairs = pairs[to_cf(rank)]
    w = em.writer
    inputs = [em.get(tensor, layout), w.ints([*pairs[:, 0], *pairs[:, 1]], "pads")]
    value = call.args[1] if len(call.args) > 1 else call.kwargs.get("constant_values")
    if value is not None and mode == "constant":
        if is_tensor(value):
            raise unsupported(call, "a tensor padding value")
        inputs.append(w.const(np.asarray([float(value)], np.float32).reshape(()), "pad_value"))
    padded = w.op("Pad", inputs, call.name, mode=mode)
    if layout == "cf" and mode == "constant" and (value is None or float(value) == 0.0):
        em.zero_padded[padded] = (inputs[0], [int(p) for p in (*pairs[:, 0], *pairs[:, 1])])
    em.set(call, padded, layout)


def _tile(em: Emitter, call: Call) -> None:
    tensor = _single(call)
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
    tensor = _single(call)
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
    tensor = _single(call)
    shape = [1 if d is None else int(d) for d in call.layer.shape]
    w = em.writer
    em.set(call, w.op("Expand", [em.get(tensor, "keras"), w.ints(shape, "shape")], call.name))


def _flip(em: Emitter, call: Call) -> None:
    tensor = _single(call)
    rank = em.value(tensor).rank
    axis = call.layer.axis
    axes = list(range(rank)) if axis is None else [int(a) % rank for a in np.ravel(axis)]
    w = em.writer
    inputs = [em.get(tensor, "keras"), w.ints([-1] * len(axes), "starts")]
    inputs += [w.ints([SMALL] * len(axes), "ends"), w.ints(axes, "axes")]
    em.set(call, w.op("Slice", [*inputs, w.ints([-1] * len(axes), "steps")], call.name))


def _roll(em: Emitter, call: Call) -> None:
    tensor = _single(call)
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


def _take(em: Emitter, call: Call) -> None:
    tensor = call.args[0].id
    indices = call.args[1] if len(call.args) > 1 else call.kwargs["indices"]
    axis = call.layer.axis
    w = em.writer
    x = em.get(tensor, "keras")
    if axis is None:
        x, axis = w.op("Reshape", [x, w.ints([-1], "flat")], "flat"), 0
    if is_tensor(indices):
        index = w.op("Cast", [em.get(indices.id, "keras")], "indices", to=TensorProto.INT64)
    else:
        index = w.const(constant_array(call, indices).astype(np.int64), "indices", np.int64)
    op_type = "GatherElements" if type(call.layer).__name__ == "TakeAlongAxis" else "Gather"
    em.set(call, w.op(op_type, [x, index], call.name, axis=int(axis)))


def onnx_dtype(dtype: Any) -> int:
    name = str(dtype).replace("keras.", "")
    if name == "bfloat16":
        return TensorProto.BFLOAT16
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(name))
    except TypeError:
        raise Refused(f"casting to {name}") from None


def _cast(em: Emitter, call: Call) -> None:
    tensor = _single(call)
    layout = em.layout_of(tensor)
    to = onnx_dtype(call.layer.dtype)
    em.set(call, em.writer.op("Cast", [em.get(tensor, layout)], call.name, to=to), layout)


def _like(fill: float | None) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensor = call.args[0].id
        value = fill
        if value is None:
            raw = call.args[1] if len(call.args) > 1 else call.kwargs["fill_value"]
            if is_tensor(raw):
                raise unsupported(call, "a tensor fill value")
            value = float(constant_array(call, raw))
        w = em.writer
        dtype = call.layer.dtype or em.graph.dtypes.get(tensor, "float32")
        shape = w.op("Shape", [em.get(tensor, "keras")], "shape")
        filled = helper.make_tensor("value", onnx_dtype(dtype), [1], [value])
        em.set(call, w.op("ConstantOfShape", [shape], call.name, value=filled))

    return handler


def _resize(em: Emitter, call: Call) -> None:
    tensor = _single(call)
    op = call.layer
    shape = em.value(tensor).shape
    if op.crop_to_aspect_ratio or op.pad_to_aspect_ratio:
        raise unsupported(call, "resizing to an aspect ratio")
    if len(shape) != 4:
        raise unsupported(call, f"resizing a rank-{len(shape)} tensor")
    height, width = (int(s) for s in op.size)
    spatial = shape[1:3] if op.data_format == "channels_last" else shape[2:4]
    if op.antialias and any(
        d is None or t < d for d, t in zip(spatial, (height, width), strict=True)
    ):
        raise unsupported(call, "antialiased downsampling")
    if op.interpolation == "bilinear":
        attributes = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    elif op.interpolation == "nearest":
        attributes = {
            "mode": "nearest",
            # TensorFlow's floor((i + 0.5) / scale) as ONNX's half-pixel rule
            "coordinate_transformation_mode": "half_pixel",
            "nearest_mode": "round_prefer_ceil",
        }
    else:
        raise unsupported(call, f"interpolation {op.interpolation!r}")
    layout = "cf" if op.data_format == "channels_last" else "keras"
    w = em.writer
    x = em.get(tensor, layout)
    leading = w.op(
        "Slice",
        [w.op("Shape", [x], "shape"), w.ints([0], "zero"), w.ints([2], "two")],
        "batch_channels",
    )
    sizes = w.op("Concat", [leading, w.ints([height, width], "hw")], "sizes", axis=0)
    em.set(call, w.op("Resize", [x, "", "", sizes], call.name, **attributes), layout)


def _depth_space(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensor = _single(call)
        layout = "cf" if call.layer.data_format == "channels_last" else "keras"
        attributes: dict[str, Any] = {"blocksize": int(call.layer.block_size)}
        if op_type == "DepthToSpace":
            attributes["mode"] = "DCR"
        y = em.writer.op(op_type, [em.get(tensor, layout)], call.name, **attributes)
        em.set(call, y, layout)

    return handler


def _matmul(em: Emitter, call: Call) -> None:
    operands = list(call.args)
    if len(operands) != 2:
        raise unsupported(call, "expected two operands")
    tensors = [o for o in operands if is_tensor(o)]
    rank = max(em.value(t.id).rank for t in tensors)
    names = operand_names(em, call, operands, "keras", rank)
    ranks = [
        em.value(o.id).rank if is_tensor(o) else np.ndim(constant_array(call, o)) for o in operands
    ]
    if type(call.layer).__name__ == "Dot" and min(ranks) < 2:
        raise unsupported(call, "a dot product with a vector")
    em.set(call, em.writer.op("MatMul", names, call.name))


def _einsum(em: Emitter, call: Call) -> None:
    operands = [*call.args]
    names = []
    for operand in operands:  # constants keep their own rank here
        if is_tensor(operand):
            names.append(em.get(operand.id, "keras"))
        else:
            array = constant_array(call, operand).astype(np.float32)
            names.append(em.writer.const(array, "operand"))
    equation = str(call.layer.subscripts).replace(" ", "")
    em.set(call, em.writer.op("Einsum", names, call.name, equation=equation))


def _dot_product_attention(em: Emitter, call: Call) -> None:
    """softmax(q k^T * scale + bias, masked) v on (batch, length, heads, depth) tensors."""
    op = call.layer
    names = ["query", "key", "value", "bias", "mask", "scale"]
    given = dict(zip(names, call.args, strict=False)) | call.kwargs
    if getattr(op, "attn_logits_soft_cap", None) is not None:
        raise unsupported(call, "soft-capped attention logits")
    if op.is_causal:
        raise unsupported(call, "causal attention")
    query, key, value = (given[n] for n in names[:3])
    if not all(is_tensor(t) and em.value(t.id).rank == 4 for t in (query, key, value)):
        raise unsupported(call, "attention on other than (batch, length, heads, depth) tensors")
    depth = em.value(query.id).shape[-1]
    scale = given.get("scale")
    if is_tensor(scale) or (scale is None and depth is None):
        raise unsupported(call, "a tensor or unknown scale")
    scale = 1.0 / float(np.sqrt(depth)) if scale is None else float(scale)
    w = em.writer
    q = w.op("Transpose", [em.get(query.id, "keras")], "q", perm=[0, 2, 1, 3])
    k = w.op("Transpose", [em.get(key.id, "keras")], "k", perm=[0, 2, 3, 1])
    v = w.op("Transpose", [em.get(value.id, "keras")], "v", perm=[0, 2, 1, 3])
    logits = w.op("Mul", [w.op("MatMul", [q, k], "qk"), w.const(scale, "scale")], "logits")
    bias = given.get("bias")
    if bias is not None:
        bias_name = operand_names(em, call, [bias], "keras", 4)[0]
        logits = w.op("Add", [logits, bias_name], "biased")
    mask = given.get("mask")
    if mask is not None:
        allowed = w.op("Cast", operand_names(em, call, [mask], "keras", 4), "allowed", to=9)
        floor = w.const(np.float32(np.finfo(np.float32).min), "masked")
        logits = w.op("Where", [allowed, logits, floor], "masked_logits")
    probabilities = w.op("Softmax", [logits], "attention", axis=-1)
    out = w.op("MatMul", [probabilities, v], "attended")
    em.set(call, w.op("Transpose", [out], call.name, perm=[0, 2, 1, 3]))


def _triangle(upper: int) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensor = _single(call)
        w = em.writer
        k = w.const(np.asarray(int(call.layer.k), np.int64), "k", np.int64)
        em.set(call, w.op("Trilu", [em.get(tensor, "keras"), k], call.name, upper=upper))

    return handler


def _cumsum(em: Emitter, call: Call) -> None:
    tensor = _single(call)
    w = em.writer
    x = em.get(tensor, "keras")
    axis = call.layer.axis
    if axis is None:
        x, axis = w.op("Reshape", [x, w.ints([-1], "flat")], "flat"), 0
    axis_name = w.const(np.asarray(int(axis), np.int64), "axis", np.int64)
    em.set(call, w.op("CumSum", [x, axis_name], call.name))


def _average(em: Emitter, call: Call) -> None:
    tensor = call.args[0].id
    weights = call.args[1] if len(call.args) > 1 else call.kwargs.get("weights")
    if weights is not None:
        raise unsupported(call, "a weighted average")
    rank = em.value(tensor).rank
    axis = call.layer.axis
    axes = list(range(rank)) if axis is None else [int(a) % rank for a in np.ravel(axis)]
    y = em.writer.reduce("ReduceMean", em.get(tensor, "keras"), axes, call.name, keepdims=0)
    em.set(call, y)


OP_HANDLERS.update(
    {
        "Reshape": _reshape,
        "Transpose": _transpose,
        "Moveaxis": _moveaxis,
        "Swapaxes": _swapaxes,
        "Split": _split,
        "ArraySplit": _split,
        "Unstack": _unstack,
        "Concatenate": _concatenate,
        "Stack": _stack,
        "ExpandDims": _expand_dims,
        "Squeeze": _squeeze,
        "Ravel": _ravel,
        "GetItem": _get_item,
        "Slice": _slice,
        "Pad": _pad,
        "Tile": _tile,
        "Repeat": _repeat,
        "BroadcastTo": _broadcast_to,
        "Flip": _flip,
        "Roll": _roll,
        "Take": _take,
        "TakeAlongAxis": _take,
        "Cast": _cast,
        "ZerosLike": _like(0.0),
        "OnesLike": _like(1.0),
        "FullLike": _like(None),
        "Resize": _resize,
        "DepthToSpace": _depth_space("DepthToSpace"),
        "SpaceToDepth": _depth_space("SpaceToDepth"),
        "Matmul": _matmul,
        "Dot": _matmul,
        "Einsum": _einsum,
        "DotProductAttention": _dot_product_attention,
        "Tril": _triangle(0),
        "Triu": _triangle(1),
        "Cumsum": _cumsum,
        "Average": _average,
    }
)
