"""Reductions, normalisations and scans written as keras.ops calls (``ops.mean(x, axis=[1, 2])``,
``ops.softmax``, ``ops.layer_norm``, ``ops.average``, ``ops.cumsum`` ...).

A reduction of a channels-first tensor stays channels-first: its axes are
mapped, so the squeeze-and-excite pattern ``mean over H, W -> conv`` needs no
transposes. Without ``keepdims`` the result is channels-last unless it has
fewer than three axes (where both layouts are the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto

from folding.export.layers.base import (
    OP_HANDLERS,
    Handler,
    cf_axis,
    inputs_of,
    sole_input,
    unsupported,
)
from folding.export.layers.operations import constant_array, is_tensor

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def keras_axes(axis: Any, rank: int) -> list[int]:
    """Keras's ``axis`` argument (None, an int, a sequence) as sorted non-negative axes."""
    if axis is None:
        return list(range(rank))
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return sorted(int(a) % rank for a in axes)


def _reduce_layout(em: Emitter, tensor: int, axes: list[int], keepdims: bool) -> tuple[str, list]:
    """The layout to reduce ``tensor`` in and the ONNX axes there."""
    rank = em.value(tensor).rank
    if em.layout_of(tensor) == "cf" and rank >= 3 and (keepdims or rank - len(axes) < 3):
        return "cf", sorted(cf_axis(a, rank) for a in axes)
    return "keras", axes


def reduction(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        op = call.layer
        if getattr(op, "initial", None) is not None:
            raise unsupported(call, "an initial value")
        rank = em.value(tensor).rank
        keepdims = bool(getattr(op, "keepdims", False))
        layout, axes = _reduce_layout(em, tensor, keras_axes(op.axis, rank), keepdims)
        x = em.get(tensor, layout)
        if op_type == "ReduceProd" and em.graph.dtypes.get(tensor) == "bool":
            raise unsupported(call, "a product of booleans")
        y = em.writer.reduce(op_type, x, axes, call.name, keepdims=int(keepdims))
        em.set(call, y, layout if keepdims else _layout_after(rank - len(axes), layout))

    return handler


def _layout_after(rank: int, layout: str) -> str:
    return layout if rank >= 3 else "keras"


def _variance(em: Emitter, x: str, axes: list[int], keepdims: int) -> str:
    w = em.writer
    mean = w.reduce("ReduceMean", x, axes, "mean", keepdims=1)
    centred = w.op("Sub", [x, mean], "centred")
    return w.reduce("ReduceMean", w.op("Mul", [centred, centred], "sq"), axes, "var", keepdims)


def spread(root: bool) -> Handler:
    """Var, or Std with ``root``."""

    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        rank = em.value(tensor).rank
        keepdims = bool(call.layer.keepdims)
        layout, axes = _reduce_layout(em, tensor, keras_axes(call.layer.axis, rank), keepdims)
        y = _variance(em, em.get(tensor, layout), axes, int(keepdims))
        if root:
            y = em.writer.op("Sqrt", [y], "std")
        em.set(call, y, layout if keepdims else _layout_after(rank - len(axes), layout))

    return handler


def _moments(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    op = call.layer
    if getattr(op, "synchronized", False):
        raise unsupported(call, "synchronized moments")
    rank = em.value(tensor).rank
    keepdims = bool(op.keepdims)
    layout, axes = _reduce_layout(em, tensor, keras_axes(op.axes, rank), keepdims)
    x = em.get(tensor, layout)
    w = em.writer
    mean = w.reduce("ReduceMean", x, axes, "mean", keepdims=int(keepdims))
    variance = _variance(em, x, axes, int(keepdims))
    out_layout = layout if keepdims else _layout_after(rank - len(axes), layout)
    em.set(call, mean, out_layout, index=0)
    em.set(call, variance, out_layout, index=1)


def _logsumexp(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    rank = em.value(tensor).rank
    axes = keras_axes(call.layer.axis, rank)
    y = em.writer.reduce(
        "ReduceLogSumExp", em.get(tensor, "keras"), axes, call.name, int(call.layer.keepdims)
    )
    em.set(call, y)


def arg_reduction(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        w = em.writer
        x = em.get(tensor, "keras")
        axis = call.layer.axis
        keepdims = int(bool(call.layer.keepdims))
        if axis is None:
            x = w.op("Reshape", [x, w.ints([-1], "flat")], "flat")
            axis, keepdims = 0, 0
        index = w.op(op_type, [x], call.name, axis=int(axis), keepdims=keepdims)
        em.set(call, w.op("Cast", [index], "index", to=TensorProto.INT32))

    return handler


def softmax(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        rank = em.value(tensor).rank
        axis = call.layer.axis
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise unsupported(call, f"softmax over several axes {list(axis)}")
            axis = axis[0]
        axis = int(axis) % rank
        layout = em.layout_of(tensor)
        onnx_axis = cf_axis(axis, rank) if layout == "cf" else axis
        y = em.writer.op(op_type, [em.get(tensor, layout)], call.name, axis=onnx_axis)
        em.set(call, y, layout)

    return handler


def _epsilon(op: Any) -> float:
    import keras

    epsilon = getattr(op, "epsilon", None)
    return float(keras.config.epsilon() if epsilon is None else epsilon)


def _normalize(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    op = call.layer
    if int(op.order) != 2:
        raise unsupported(call, f"an order-{op.order} norm")
    rank = em.value(tensor).rank
    layout, axes = _reduce_layout(em, tensor, keras_axes(op.axis, rank), True)
    w = em.writer
    x = em.get(tensor, layout)
    square_sum = w.reduce("ReduceSum", w.op("Mul", [x, x], "square"), axes, "square_sum")
    inverse = w.op("Reciprocal", [w.op("Sqrt", [square_sum], "norm")], "inv_norm")
    inverse = w.op("Min", [inverse, w.const(1.0 / _epsilon(op), "inv_eps")], "inv_norm_capped")
    em.set(call, w.op("Mul", [x, inverse], call.name), layout)


def _parameter(em: Emitter, call: Call, value: Any, hint: str) -> str:
    if is_tensor(value):
        return em.get(value.id, "keras")
    return em.writer.const(constant_array(call, value).astype(np.float32), hint)


def _layer_norm(em: Emitter, call: Call) -> None:
    op = call.layer
    x_ref = call.args[0]
    gamma = call.args[1] if len(call.args) > 1 else call.kwargs.get("gamma")
    beta = call.args[2] if len(call.args) > 2 else call.kwargs.get("beta")
    rank = em.value(x_ref.id).rank
    axes = keras_axes(op.axis, rank)
    if axes != list(range(axes[0], rank)) or getattr(op, "rms_scaling", False):
        raise unsupported(call, f"normalising axes {axes} (rms_scaling {op.rms_scaling})")
    shape = [em.value(x_ref.id).shape[a] for a in axes]
    if any(d is None for d in shape):
        raise unsupported(call, "normalising a dynamic axis")
    w = em.writer
    gamma_name = (
        w.const(np.ones(shape, np.float32), "ones")
        if gamma is None
        else _parameter(em, call, gamma, "gamma")
    )
    inputs = [em.get(x_ref.id, "keras"), gamma_name]
    if beta is not None:
        inputs.append(_parameter(em, call, beta, "beta"))
    y = w.op("LayerNormalization", inputs, call.name, axis=axes[0], epsilon=_epsilon(op))
    em.set(call, y)


def _rms_norm(em: Emitter, call: Call) -> None:
    op = call.layer
    x_ref = call.args[0]
    scale = call.args[1] if len(call.args) > 1 else call.kwargs.get("scale")
    rank = em.value(x_ref.id).rank
    axes = keras_axes(op.axis, rank)
    w = em.writer
    x = em.get(x_ref.id, "keras")
    mean_square = w.reduce("ReduceMean", w.op("Mul", [x, x], "square"), axes, "mean_square")
    shifted = w.op("Add", [mean_square, w.const(_epsilon(op), "epsilon")], "shifted")
    y = w.op("Mul", [x, w.op("Reciprocal", [w.op("Sqrt", [shifted], "rms")], "rrms")], "rms")
    if scale is not None:
        y = w.op("Mul", [y, _parameter(em, call, scale, "scale")], call.name)
    em.set(call, y)


def _batch_norm_op(em: Emitter, call: Call) -> None:
    """``ops.batch_normalization(x, mean, variance, axis, offset, scale, epsilon)``:
    ``(x - mean) / sqrt(variance + epsilon) * scale + offset`` along ``axis``."""
    op = call.layer
    names = ["x", "mean", "variance", "offset", "scale"]
    given = dict(zip(names, call.args, strict=False)) | call.kwargs
    tensor = given["x"].id
    rank = em.value(tensor).rank
    axis = int(op.axis) % rank
    layout = em.layout_of(tensor) if rank >= 3 and axis == rank - 1 else "keras"
    where = cf_axis(axis, rank) if layout == "cf" else axis
    w = em.writer

    def parameter(key: str) -> str | None:
        value = given.get(key)
        if value is None:
            return None
        if is_tensor(value):
            raise unsupported(call, f"a tensor {key}")
        array = constant_array(call, value).astype(np.float32).reshape(-1)
        shape = [1] * rank
        shape[where] = array.size
        return w.const(array.reshape(shape), key)

    y = w.op("Sub", [em.get(tensor, layout), parameter("mean")], "centred")
    variance = constant_array(call, given["variance"]).astype(np.float64).reshape(-1)
    inverse = (1.0 / np.sqrt(variance + float(op.epsilon))).astype(np.float32)
    shape = [1] * rank
    shape[where] = inverse.size
    y = w.op("Mul", [y, w.const(inverse.reshape(shape), "inv_std")], "normalised")
    for key, op_type in (("scale", "Mul"), ("offset", "Add")):
        name = parameter(key)
        if name is not None:
            y = w.op(op_type, [y, name], key)
    em.set(call, y, layout)


def _cumsum(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
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
        "BatchNorm": _batch_norm_op,
        "Mean": reduction("ReduceMean"),
        "Sum": reduction("ReduceSum"),
        "Max": reduction("ReduceMax"),
        "Amax": reduction("ReduceMax"),
        "Min": reduction("ReduceMin"),
        "Amin": reduction("ReduceMin"),
        "Prod": reduction("ReduceProd"),
        "Var": spread(root=False),
        "Std": spread(root=True),
        "Moments": _moments,
        "Logsumexp": _logsumexp,
        "Argmax": arg_reduction("ArgMax"),
        "Argmin": arg_reduction("ArgMin"),
        "Softmax": softmax("Softmax"),
        "LogSoftmax": softmax("LogSoftmax"),
        "Normalize": _normalize,
        "LayerNorm": _layer_norm,
        "RMSNorm": _rms_norm,
        "Cumsum": _cumsum,
        "Average": _average,
    }
)
