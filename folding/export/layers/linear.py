"""Dense, Embedding and the convolutions (TensorFlow's "same" padding: the odd pixel at the end)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from keras import layers
from onnx import TensorProto

from folding.export.layers.activations import activate_argument
from folding.export.layers.base import (
    conv_layout,
    handles,
    inputs_of,
    padding_attributes,
    rank_of,
    unsupported,
)

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _bias(em: Emitter, call: Call, arrays: dict[str, np.ndarray]) -> str | None:
    bias = arrays.get("bias")
    return None if bias is None else em.writer.const(bias.astype(np.float32), f"{call.name}_bias")


@handles(layers.Dense)
def _dense(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    arrays = em.weights(call)
    w = em.writer
    kernel = w.const(arrays["kernel"].astype(np.float32), f"{call.name}_kernel")
    bias = _bias(em, call, arrays)
    x = em.get(tensor, "keras")
    if rank_of(em, tensor) == 2:
        y = w.op("Gemm", [x, kernel, *([bias] if bias else [])], call.name)
    else:
        y = w.op("MatMul", [x, kernel], call.name)
        if bias:
            y = w.op("Add", [y, bias], f"{call.name}_bias_add")
    em.set(call, activate_argument(em, call, y, "keras"))


@handles(layers.Embedding)
def _embedding(em: Emitter, call: Call) -> None:
    tensors = inputs_of(call)
    if len(tensors) != 1 or call.layer.mask_zero:
        raise unsupported(call, "masked embeddings")
    table = em.writer.const(em.weights(call)["embeddings"].astype(np.float32), f"{call.name}_table")
    ids = em.writer.op("Cast", [em.get(tensors[0], "keras")], "ids", to=TensorProto.INT64)
    em.set(call, em.writer.op("Gather", [table, ids], call.name, axis=0))


def _conv_kernel_to_onnx(kernel: np.ndarray) -> np.ndarray:
    """Keras (*spatial, in, out) -> ONNX (out, in, *spatial)."""
    spatial = kernel.ndim - 2
    return np.ascontiguousarray(kernel.transpose(spatial + 1, spatial, *range(spatial)))


def _conv(
    em: Emitter,
    call: Call,
    x: str,
    in_shape: tuple,
    weight: np.ndarray,
    bias: str | None,
    *,
    strides: tuple,
    dilation: tuple,
    groups: int,
    pad_from_layer: bool = True,
    hint: str = "",
) -> str:
    kernel_shape = tuple(weight.shape[2:])
    attributes: dict[str, Any] = {
        "kernel_shape": list(kernel_shape),
        "strides": list(strides),
        "dilations": list(dilation),
        "group": groups,
    }
    if pad_from_layer:
        attributes.update(padding_attributes(call, in_shape, kernel_shape, strides, dilation))
    else:
        attributes["pads"] = [0] * (2 * len(kernel_shape))
    if "pads" in attributes and x in em.zero_padded:
        # a zero Pad just before: the convolution pads itself (one node, and ONNX
        # Runtime's blocked-layout convolutions are not interrupted by a Pad)
        x, outer = em.zero_padded[x]
        spatial = len(kernel_shape)
        rank = spatial + 2
        begin = [a + b for a, b in zip(attributes["pads"][:spatial], outer[2:rank], strict=True)]
        end = [a + b for a, b in zip(attributes["pads"][spatial:], outer[rank + 2 :], strict=True)]
        attributes["pads"] = begin + end
    w = em.writer
    inputs = [x, w.const(weight.astype(np.float32), f"{call.name}_{hint or 'kernel'}")]
    if bias:
        inputs.append(bias)
    return w.op("Conv", inputs, hint or call.name, **attributes)


@handles(
    layers.Conv1D,
    layers.Conv2D,
    layers.Conv3D,
    layers.DepthwiseConv1D,
    layers.DepthwiseConv2D,
)
def _conv_layer(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    arrays = em.weights(call)
    kernel = arrays["kernel"]
    if isinstance(call.layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        weight, groups = _depthwise_weight(kernel), int(kernel.shape[-2])
    else:
        weight, groups = _conv_kernel_to_onnx(kernel), int(getattr(call.layer, "groups", 1))
    y = _layer_conv(em, call, tensor, weight, _bias(em, call, arrays), groups)
    layout = conv_layout(call.layer)
    em.set(call, activate_argument(em, call, y, layout), layout)


def _layer_conv(
    em: Emitter,
    call: Call,
    tensor: int,
    weight: np.ndarray,
    bias: str | None,
    groups: int,
    hint: str = "",
) -> str:
    """``tensor`` (in the layer's conv layout) convolved by the ONNX ``weight`` with
    the layer's own strides, dilation and padding."""
    layer = call.layer
    return _conv(
        em,
        call,
        em.get(tensor, conv_layout(layer)),
        em.value(tensor).shape,
        weight,
        bias,
        strides=tuple(layer.strides),
        dilation=tuple(layer.dilation_rate),
        groups=groups,
        hint=hint,
    )


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise (*spatial, in, multiplier) -> ONNX (in*multiplier, 1, *spatial);
    output channel i*multiplier + j comes from kernel[..., i, j]."""
    spatial = kernel.ndim - 2
    flat = kernel.reshape(*kernel.shape[:spatial], -1)
    moved = flat.transpose(spatial, *range(spatial))
    return np.ascontiguousarray(moved[:, None])


@handles(layers.SeparableConv1D, layers.SeparableConv2D)
def _separable_layer(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layout = conv_layout(call.layer)
    arrays = em.weights(call)
    depthwise = arrays["depthwise_kernel"]
    weight = _depthwise_weight(depthwise)
    mid = _layer_conv(em, call, tensor, weight, None, int(depthwise.shape[-2]), "depthwise")
    y = _conv(
        em,
        call,
        mid,
        (),
        _conv_kernel_to_onnx(arrays["pointwise_kernel"]),
        _bias(em, call, arrays),
        strides=(1,) * (depthwise.ndim - 2),
        dilation=(1,) * (depthwise.ndim - 2),
        groups=1,
        pad_from_layer=False,
        hint="pointwise",
    )
    em.set(call, activate_argument(em, call, y, layout), layout)


@handles(layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
def _conv_transpose_layer(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layer = call.layer
    layout = conv_layout(layer)
    arrays = em.weights(call)
    kernel = arrays["kernel"]  # (*spatial, out, in)
    spatial = kernel.ndim - 2
    weight = np.ascontiguousarray(kernel.transpose(spatial + 1, spatial, *range(spatial)))
    strides = tuple(layer.strides)
    dilation = tuple(layer.dilation_rate)
    if any(d != 1 for d in dilation):
        raise unsupported(call, "dilated transposed convolution")
    output_padding = [int(p) for p in getattr(layer, "output_padding", None) or []]
    if any(output_padding) and layer.padding != "valid":
        raise unsupported(call, "output_padding with 'same' padding")
    attributes: dict[str, Any] = {
        "kernel_shape": list(kernel.shape[:spatial]),
        "strides": list(strides),
    }
    if layer.padding == "valid":
        attributes["pads"] = [0] * (2 * spatial)
        if any(output_padding):  # extra rows and columns at the end, as in Keras
            attributes["output_padding"] = output_padding
    else:
        # TensorFlow crops total = max(k - s, 0) per axis, the smaller half at the start.
        begin, end = [], []
        for k, s in zip(kernel.shape[:spatial], strides, strict=True):
            total = max(k - s, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        attributes["pads"] = begin + end
    w = em.writer
    inputs = [em.get(tensor, layout), w.const(weight.astype(np.float32), f"{call.name}_kernel")]
    bias = _bias(em, call, arrays)
    if bias:
        inputs.append(bias)
    y = w.op("ConvTranspose", inputs, call.name, **attributes)
    em.set(call, activate_argument(em, call, y, layout), layout)
