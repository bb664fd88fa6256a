"""Padding, cropping, upsampling, flattening, reshaping, permuting and repeating layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from keras import layers

from folding.export.layers.base import (
    BIG,
    channels_last,
    conv_layout,
    handles,
    inputs_of,
    rank_of,
    unsupported,
)

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _spatial_pairs(value: Any, rank: int) -> list[tuple[int, int]]:
    """A padding or cropping layer's argument as (before, after) per spatial axis."""
    if isinstance(value[0], int):
        value = [value]
    return [tuple(int(v) for v in pair) for pair in value][: rank - 2]


@handles(layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D)
def _zero_padding(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    pairs = _spatial_pairs(call.layer.padding, rank_of(em, tensor))
    layout = conv_layout(call.layer)
    begin = [0, 0] + [p[0] for p in pairs]
    end = [0, 0] + [p[1] for p in pairs]
    w = em.writer
    inputs = [em.get(tensor, layout), w.ints(begin + end, "pads")]
    if any(_is_max_pooling(user) for user in em.graph.consumers().get(call.outputs[0], [])):
        # Padding with -0.0 (equal to 0 in every comparison and sum) keeps ONNX Runtime's
        # Pad_Fusion, which checks for all-zero bytes, from moving the padding into the
        # MaxPool, whose own padding is -inf: the file answers right in any session.
        inputs.append(w.const(np.asarray([-0.0], np.float32), "minus_zero"))
    padded = w.op("Pad", inputs, call.name)
    if layout == "cf" and len(inputs) == 2:
        em.zero_padded[padded] = (inputs[0], begin + end)
    em.set(call, padded, layout)


def _is_max_pooling(call: Call) -> bool:
    return isinstance(call.layer, (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D))


@handles(layers.Cropping1D, layers.Cropping2D, layers.Cropping3D)
def _cropping(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    rank = rank_of(em, tensor)
    pairs = _spatial_pairs(call.layer.cropping, rank)
    layout = conv_layout(call.layer)
    starts = [p[0] for p in pairs]
    ends = [-p[1] if p[1] else BIG for p in pairs]
    w = em.writer
    y = w.op(
        "Slice",
        [
            em.get(tensor, layout),
            w.ints(starts, "starts"),
            w.ints(ends, "ends"),
            w.ints(list(range(2, rank)), "axes"),
        ],
        call.name,
    )
    em.set(call, y, layout)


@handles(layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D)
def _upsampling(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layer = call.layer
    rank = rank_of(em, tensor)
    size = layer.size if isinstance(layer.size, (list, tuple)) else (layer.size,)
    interpolation = getattr(layer, "interpolation", "nearest")
    if interpolation == "nearest":
        attributes = {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        }
    elif interpolation == "bilinear":
        attributes = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    else:
        raise unsupported(call, f"interpolation {interpolation!r}")
    layout = conv_layout(layer) if rank > 3 or isinstance(layer, layers.UpSampling1D) else "keras"
    scales = np.asarray([1.0, 1.0, *[float(s) for s in size]], dtype=np.float32)
    w = em.writer
    y = w.op(
        "Resize", [em.get(tensor, layout), "", w.const(scales, "scales")], call.name, **attributes
    )
    em.set(call, y, layout)


@handles(layers.Flatten)
def _flatten(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    rank = rank_of(em, tensor)
    x = em.get(tensor, "keras")
    if not channels_last(call.layer) and rank > 2:
        # Keras moves axis 1 to the end before flattening a channels-first tensor
        perm = [0, *range(2, rank), 1]
        x = em.writer.op("Transpose", [x], f"{call.name}_to_last", perm=perm)
    em.set(call, em.writer.op("Flatten", [x], call.name, axis=1))


@handles(layers.Reshape)
def _reshape(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    target = [0, *[int(d) for d in call.layer.target_shape]]
    reshape_to(em, call, tensor, target)


def reshape_to(em: Emitter, call: Call, tensor: int, target: list[int]) -> None:
    """``Reshape`` to ``target`` (0 keeps the batch axis). A globally pooled
    channels-first tensor reshaped back to (1, ..., 1, channels), as squeeze-and-
    excite blocks do, is the pooled tensor itself: no Flatten, Reshape, Transpose."""
    w = em.writer
    x = em.get(tensor, "keras")
    pooled = em.pooled.get(x)
    channels = em.value(tensor).shape[-1]
    if (
        pooled is not None
        and len(target) >= 3
        and target[1:] == [1] * (len(target) - 2) + [channels]
    ):
        em.set(call, pooled, "cf")
        return
    em.set(call, w.op("Reshape", [x, w.ints(target, "shape")], call.name))


@handles(layers.Permute)
def _permute(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    perm = [0, *[int(d) for d in call.layer.dims]]
    em.set(call, em.writer.op("Transpose", [em.get(tensor, "keras")], call.name, perm=perm))


@handles(layers.RepeatVector)
def _repeat_vector(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    w = em.writer
    expanded = w.op("Unsqueeze", [em.get(tensor, "keras"), w.ints([1], "axis")], "expanded")
    y = w.op("Tile", [expanded, w.ints([1, int(call.layer.n), 1], "repeats")], call.name)
    em.set(call, y)
