"""BatchNormalization (kept as its own ONNX node), Layer/Group/Unit normalisation,
Normalization and Rescaling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import layers

from folding.export.layers.base import (
    handles,
    inputs_of,
    rank_of,
    unsupported,
)

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _single_axis(call: Call, axis: Any, rank: int) -> int:
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise unsupported(call, f"normalises over several axes {list(axis)}")
        axis = axis[0]
    return int(axis) % rank


def _channel_layout(em: Emitter, call: Call, tensor: int, axis: int) -> str:
    """The layout in which ``axis`` (a Keras axis) sits at position 1."""
    rank = rank_of(em, tensor)
    if axis == 1:
        return "keras"
    if axis == rank - 1 and rank >= 3:
        return "cf"
    raise unsupported(call, f"normalises axis {axis} of a rank-{rank} tensor")


@handles(layers.BatchNormalization)
def _batch_norm(em: Emitter, call: Call) -> None:
    if call.kwargs.get("training") is True:
        raise unsupported(call, "called with training=True")
    tensor = inputs_of(call)[0]
    rank = rank_of(em, tensor)
    axis = _single_axis(call, call.layer.axis, rank)
    arrays = em.weights(call)
    channels = arrays["moving_mean"].shape[0]
    gamma = arrays.get("gamma", np.ones(channels))
    beta = arrays.get("beta", np.zeros(channels))
    w = em.writer
    layout = _channel_layout(em, call, tensor, axis)
    y = w.op(
        "BatchNormalization",
        [
            em.get(tensor, layout),
            w.const(gamma.astype(np.float32), f"{call.name}_gamma"),
            w.const(beta.astype(np.float32), f"{call.name}_beta"),
            w.const(arrays["moving_mean"].astype(np.float32), f"{call.name}_moving_mean"),
            w.const(arrays["moving_variance"].astype(np.float32), f"{call.name}_moving_variance"),
        ],
        call.name,
        epsilon=float(call.layer.epsilon),
    )
    em.set(call, y, layout)


@handles(layers.LayerNormalization)
def _layer_norm(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layer = call.layer
    rank = rank_of(em, tensor)
    axes = sorted(a % rank for a in (layer.axis if isinstance(layer.axis, list) else [layer.axis]))
    if axes != list(range(axes[0], rank)):
        raise unsupported(call, f"normalises non-trailing axes {axes}")
    if getattr(layer, "rms_scaling", False):
        raise unsupported(call, "rms_scaling")
    shape = em.value(tensor).shape
    normalized = [shape[a] for a in axes]
    if any(d is None for d in normalized):
        raise unsupported(call, "normalises a dynamic axis")
    arrays = em.weights(call)
    w = em.writer
    gamma = arrays.get("gamma", np.ones(normalized)).reshape(normalized)
    beta = arrays.get("beta", np.zeros(normalized)).reshape(normalized)
    y = w.op(
        "LayerNormalization",
        [
            em.get(tensor, "keras"),
            w.const(gamma.astype(np.float32), f"{call.name}_gamma"),
            w.const(beta.astype(np.float32), f"{call.name}_beta"),
        ],
        call.name,
        axis=axes[0],
        epsilon=float(layer.epsilon),
    )
    em.set(call, y)


@handles(layers.GroupNormalization)
def _group_norm(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layer = call.layer
    rank = rank_of(em, tensor)
    axis = _single_axis(call, layer.axis, rank)
    layout = _channel_layout(em, call, tensor, axis)
    channels = em.value(tensor).shape[axis]
    groups = int(layer.groups)
    arrays = em.weights(call)
    w = em.writer
    x = em.get(tensor, layout)
    grouped = w.op("Reshape", [x, w.ints([0, groups, -1], "group_shape")], "grouped")
    normalized = w.op(
        "InstanceNormalization",
        [grouped, w.const(np.ones(groups), "ones"), w.const(np.zeros(groups), "zeros")],
        "group_norm",
        epsilon=float(layer.epsilon),
    )
    y = w.op("Reshape", [normalized, w.op("Shape", [x], "shape")], "ungrouped")
    broadcast = [channels] + [1] * (rank - 2)
    if "gamma" in arrays:
        gamma = w.const(arrays["gamma"].reshape(broadcast), f"{call.name}_gamma")
        y = w.op("Mul", [y, gamma], "group_scale")
    if "beta" in arrays:
        beta = w.const(arrays["beta"].reshape(broadcast), f"{call.name}_beta")
        y = w.op("Add", [y, beta], "group_shift")
    em.set(call, y, layout)


@handles(layers.UnitNormalization)
def _unit_norm(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    rank = rank_of(em, tensor)
    axes = call.layer.axis if isinstance(call.layer.axis, (list, tuple)) else [call.layer.axis]
    axes = sorted(a % rank for a in axes)
    w = em.writer
    x = em.get(tensor, "keras")
    square_sum = w.reduce("ReduceSum", w.op("Mul", [x, x], "square"), axes, "square_sum")
    inverse = w.op("Reciprocal", [w.op("Sqrt", [square_sum], "norm")], "inv_norm")
    inverse = w.op("Min", [inverse, w.const(1e12, "inv_eps")], "inv_norm_capped")
    em.set(call, w.op("Mul", [x, inverse], call.name))


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


@handles(layers.Rescaling)
def _rescaling(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    scale, offset = _to_numpy(call.layer.scale), _to_numpy(call.layer.offset)
    layout = em.layout_of(tensor) if scale.size == 1 and offset.size == 1 else "keras"
    w = em.writer
    y = w.op("Mul", [em.get(tensor, layout), w.const(scale, "scale")], "rescale")
    if np.any(offset != 0):
        y = w.op("Add", [y, w.const(offset, "offset")], "offset")
    em.set(call, y, layout)


@handles(layers.Normalization)
def _normalization(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layer = call.layer
    mean, variance = _to_numpy(layer.mean), _to_numpy(layer.variance)
    denominator = np.maximum(np.sqrt(variance), keras.config.epsilon())
    w = em.writer
    x = em.get(tensor, "keras")
    if layer.invert:
        scaled = w.op("Mul", [x, w.const(denominator, "std")], "scaled")
        y = w.op("Add", [scaled, w.const(mean, "mean")], call.name)
    else:
        centred = w.op("Sub", [x, w.const(mean, "mean")], "centred")
        y = w.op("Div", [centred, w.const(denominator, "std")], call.name)
    em.set(call, y)
