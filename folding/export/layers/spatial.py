"""keras.ops calls on images: pad, ``image.resize`` (bilinear, nearest; also the Resizing
layer) and depth_to_space / space_to_depth.

Padding works in whichever layout its input is in; resizing and the depth/space
moves read channels-first, as their ONNX operators do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from keras import layers

from folding.export.layers.base import OP_HANDLERS, Handler, handles, sole_input, unsupported
from folding.export.layers.operations import is_tensor

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


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


def _resize(em: Emitter, call: Call) -> None:
    op = call.layer
    _resize_images(em, call, sole_input(call), tuple(op.size), op.interpolation, op)


@handles(layers.Resizing)
def _resizing_layer(em: Emitter, call: Call) -> None:
    """The Resizing layer: ``keras.ops.image.resize`` of a batch to (height, width)."""
    layer = call.layer
    if em.graph.dtypes.get(call.outputs[0], "float32") != "float32":
        raise unsupported(call, "resizing to a dtype other than float32")
    size = (layer.height, layer.width)
    _resize_images(em, call, sole_input(call), size, layer.interpolation, layer)


def _resize_images(
    em: Emitter, call: Call, tensor: int, size: tuple, interpolation: str, op: Any
) -> None:
    """A rank-4 batch resized as ``keras.ops.image.resize`` does; ``op`` carries its
    antialias, data_format and aspect-ratio settings."""
    shape = em.value(tensor).shape
    if op.crop_to_aspect_ratio or op.pad_to_aspect_ratio:
        raise unsupported(call, "resizing to an aspect ratio")
    if len(shape) != 4:
        raise unsupported(call, f"resizing a rank-{len(shape)} tensor")
    height, width = (int(s) for s in size)
    spatial = shape[1:3] if op.data_format == "channels_last" else shape[2:4]
    if op.antialias and any(
        d is None or t < d for d, t in zip(spatial, (height, width), strict=True)
    ):
        raise unsupported(call, "antialiased downsampling")
    if interpolation == "bilinear":
        attributes = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    elif interpolation == "nearest":
        attributes = {
            "mode": "nearest",
            # TensorFlow's floor((i + 0.5) / scale) as ONNX's half-pixel rule
            "coordinate_transformation_mode": "half_pixel",
            "nearest_mode": "round_prefer_ceil",
        }
    else:
        raise unsupported(call, f"interpolation {interpolation!r}")
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
        tensor = sole_input(call)
        layout = "cf" if call.layer.data_format == "channels_last" else "keras"
        attributes: dict[str, Any] = {"blocksize": int(call.layer.block_size)}
        if op_type == "DepthToSpace":
            attributes["mode"] = "DCR"
        y = em.writer.op(op_type, [em.get(tensor, layout)], call.name, **attributes)
        em.set(call, y, layout)

    return handler


OP_HANDLERS.update(
    {
        "Pad": _pad,
        "Resize": _resize,
        "DepthToSpace": _depth_space("DepthToSpace"),
        "SpaceToDepth": _depth_space("SpaceToDepth"),
    }
)
