"""The ONNX form of each Keras layer the direct exporter knows.

One function per layer kind, ``handler(emitter, call)``: it reads the call's
input tensors from the emitter (in the layout it wants), writes nodes, and
records the call's outputs. Keras semantics are followed exactly, including
the less obvious ones (TensorFlow's "same" padding puts the odd pixel at the
end; average pooling with "same" padding does not count the padding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import layers
from onnx import TensorProto

if TYPE_CHECKING:
    from folding.emit import Emitter
    from folding.graph import Call

Handler = Callable[["Emitter", "Call"], None]
HANDLERS: dict[type, Handler] = {}
NAMED_HANDLERS: dict[str, Handler] = {}  # keras.applications' own layers, by class name


def handles(*classes: type) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        for cls in classes:
            HANDLERS[cls] = function
        return function

    return register


def handles_named(*names: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        for name in names:
            NAMED_HANDLERS[name] = function
        return function

    return register


def emit(em: Emitter, call: Call) -> None:
    from folding.emit import Unsupported

    layer = call.layer
    if getattr(layer, "quantization_mode", None):
        raise Unsupported(call, "quantized layers are exported by the general exporter")
    if getattr(layer, "lora_enabled", False):
        raise Unsupported(call, "LoRA layers are exported by the general exporter")
    handler = HANDLERS.get(type(layer))
    if handler is None and type(layer).__module__.startswith("keras.src.applications"):
        handler = NAMED_HANDLERS.get(type(layer).__name__)
    if handler is None and type(layer).__module__.startswith("keras.src.ops"):
        handler = OP_HANDLERS.get(type(layer).__name__)
    if handler is None:
        raise Unsupported(call, "no direct ONNX form")
    handler(em, call)


def _inputs(call: Call) -> list[int]:
    from folding.emit import refs

    return refs((call.args, call.kwargs))


def _rank(em: Emitter, tensor: int) -> int:
    return em.value(tensor).rank


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _conv_layout(layer: Any) -> str:
    """The layout an ONNX conv/pool needs its input in: channels-first."""
    return "cf" if _channels_last(layer) else "keras"


def _unsupported(call: Call, reason: str) -> Exception:
    from folding.emit import Unsupported

    return Unsupported(call, reason)


# -- activations ---------------------------------------------------------------


def activation(em: Emitter, x: str, function: Any, call: Call) -> str:
    """Apply a Keras activation function (by identity, not by name alone)."""
    name = getattr(function, "__name__", None)
    module = getattr(function, "__module__", "") or ""
    if not module.startswith("keras") or name not in ACTIVATIONS:
        raise _unsupported(call, f"activation {name or function!r} has no direct ONNX form")
    return ACTIVATIONS[name](em, x)


def _gelu(em: Emitter, x: str, approximate: bool = False) -> str:
    w = em.writer
    half = w.const(0.5, "half")
    if approximate:
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = w.op("Mul", [w.op("Mul", [x, x], "gelu_sq"), x], "gelu_cube")
        inner = w.op("Add", [x, w.op("Mul", [cube, w.const(0.044715, "c")], "gelu_c")], "gelu_in")
        scaled = w.op("Mul", [inner, w.const(math.sqrt(2 / math.pi), "s2pi")], "gelu_scaled")
        gate = w.op("Add", [w.op("Tanh", [scaled], "gelu_tanh"), w.const(1.0, "one")], "gelu_g")
    else:
        # 0.5 x (1 + erf(x / sqrt 2))
        erf = w.op("Erf", [w.op("Mul", [x, w.const(1 / math.sqrt(2), "rsqrt2")], "gelu_s")], "erf")
        gate = w.op("Add", [erf, w.const(1.0, "one")], "gelu_g")
    return w.op("Mul", [w.op("Mul", [x, half], "gelu_half"), gate], "gelu")


def _swish(em: Emitter, x: str) -> str:
    return em.writer.op("Mul", [x, em.writer.op("Sigmoid", [x], "sigmoid")], "silu")


def _mish(em: Emitter, x: str) -> str:
    w = em.writer
    return w.op("Mul", [x, w.op("Tanh", [w.op("Softplus", [x], "softplus")], "tanh")], "mish")


def _clip(em: Emitter, x: str, low: float | None, high: float | None) -> str:
    w = em.writer
    low_name = w.const(low, "min") if low is not None else ""
    high_name = w.const(high, "max") if high is not None else ""
    return w.op("Clip", [x, low_name, high_name], "clip")


ACTIVATIONS: dict[str, Callable[[Emitter, str], str]] = {
    "linear": lambda em, x: x,
    "relu": lambda em, x: em.writer.op("Relu", [x], "relu"),
    "relu6": lambda em, x: _clip(em, x, 0.0, 6.0),
    "sigmoid": lambda em, x: em.writer.op("Sigmoid", [x], "sigmoid"),
    "hard_sigmoid": lambda em, x: em.writer.op(
        "HardSigmoid", [x], "hard_sigmoid", alpha=1 / 6, beta=0.5
    ),
    "hard_silu": lambda em, x: em.writer.op("HardSwish", [x], "hard_silu"),
    "hard_swish": lambda em, x: em.writer.op("HardSwish", [x], "hard_silu"),
    "tanh": lambda em, x: em.writer.op("Tanh", [x], "tanh"),
    "silu": _swish,
    "swish": _swish,
    "gelu": _gelu,
    "elu": lambda em, x: em.writer.op("Elu", [x], "elu", alpha=1.0),
    "selu": lambda em, x: em.writer.op(
        "Selu", [x], "selu", alpha=1.6732632423543772, gamma=1.0507009873554805
    ),
    "softplus": lambda em, x: em.writer.op("Softplus", [x], "softplus"),
    "softsign": lambda em, x: em.writer.op("Softsign", [x], "softsign"),
    "mish": _mish,
    "exponential": lambda em, x: em.writer.op("Exp", [x], "exp"),
    "leaky_relu": lambda em, x: em.writer.op("LeakyRelu", [x], "leaky_relu", alpha=0.2),
    "softmax": lambda em, x: em.writer.op("Softmax", [x], "softmax", axis=-1),
    "log_softmax": lambda em, x: em.writer.op("LogSoftmax", [x], "log_softmax", axis=-1),
}


def _activate(em: Emitter, call: Call, x: str, layout: str) -> str:
    """The layer's own ``activation`` argument, applied to ``x``."""
    function = getattr(call.layer, "activation", None)
    if function is None or function is keras.activations.linear:
        return x
    name = getattr(function, "__name__", "")
    if name in ("softmax", "log_softmax") and layout == "cf":
        raise _unsupported(call, "softmax over a channels-first tensor")
    return activation(em, x, function, call)


@handles(layers.Activation)
def _activation_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    name = getattr(call.layer.activation, "__name__", "")
    layout = "keras" if name in ("softmax", "log_softmax") else em.layout_of(tensor)
    x = em.get(tensor, layout)
    em.set(call, activation(em, x, call.layer.activation, call), layout)


@handles(layers.ReLU)
def _relu_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layout = em.layout_of(tensor)
    x = em.get(tensor, layout)
    layer, w = call.layer, em.writer
    slope = float(layer.negative_slope or 0.0)
    threshold = float(layer.threshold or 0.0)
    if threshold == 0.0:
        y = w.op("LeakyRelu", [x], "leaky_relu", alpha=slope) if slope else w.op("Relu", [x], "r")
    else:
        shifted = w.op("Sub", [x, w.const(threshold, "threshold")], "shifted")
        below = w.op("Mul", [shifted, w.const(slope, "slope")], "below")
        above = w.op("GreaterOrEqual", [x, w.const(threshold, "threshold")], "above")
        y = w.op("Where", [above, x, below], "relu")
    if layer.max_value is not None:
        y = w.op("Min", [y, w.const(float(layer.max_value), "max_value")], "relu_max")
    em.set(call, y, layout)


@handles(layers.LeakyReLU)
def _leaky_relu_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layout = em.layout_of(tensor)
    alpha = float(call.layer.negative_slope)
    em.set(call, em.writer.op("LeakyRelu", [em.get(tensor, layout)], "leaky", alpha=alpha), layout)


@handles(layers.ELU)
def _elu_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layout = em.layout_of(tensor)
    alpha = float(call.layer.alpha)
    em.set(call, em.writer.op("Elu", [em.get(tensor, layout)], "elu", alpha=alpha), layout)


@handles(layers.Softmax)
def _softmax_layer(em: Emitter, call: Call) -> None:
    tensors = _inputs(call)
    if len(tensors) != 1:
        raise _unsupported(call, "a softmax mask")
    axis = call.layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _unsupported(call, f"softmax over several axes {list(axis)}")
        axis = axis[0]
    em.set(call, em.writer.op("Softmax", [em.get(tensors[0], "keras")], "softmax", axis=axis))


@handles(layers.PReLU)
def _prelu_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    alpha = em.weights(call)["alpha"]
    slope = em.writer.const(alpha.astype(np.float32), "prelu_slope")
    em.set(call, em.writer.op("PRelu", [em.get(tensor, "keras"), slope], "prelu"))


# -- identities ---------------------------------------------------------------


@handles(
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
    layers.Identity,
    layers.ActivityRegularization,
)
def _identity(em: Emitter, call: Call) -> None:
    em.alias(call, _inputs(call)[0])


@handles_named("StochasticDepth")
def _stochastic_depth(em: Emitter, call: Call) -> None:
    if call.kwargs.get("training") is True:
        raise _unsupported(call, "called with training=True")
    em.alias(call, _inputs(call)[0])


# -- linear layers --------------------------------------------------------------


def _bias(em: Emitter, call: Call, arrays: dict[str, np.ndarray]) -> str | None:
    bias = arrays.get("bias")
    return None if bias is None else em.writer.const(bias.astype(np.float32), f"{call.name}_bias")


@handles(layers.Dense)
def _dense(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    arrays = em.weights(call)
    w = em.writer
    kernel = w.const(arrays["kernel"].astype(np.float32), f"{call.name}_kernel")
    bias = _bias(em, call, arrays)
    x = em.get(tensor, "keras")
    if _rank(em, tensor) == 2:
        y = w.op("Gemm", [x, kernel, *([bias] if bias else [])], call.name)
    else:
        y = w.op("MatMul", [x, kernel], call.name)
        if bias:
            y = w.op("Add", [y, bias], f"{call.name}_bias_add")
    em.set(call, _activate(em, call, y, "keras"))


@handles(layers.Embedding)
def _embedding(em: Emitter, call: Call) -> None:
    tensors = _inputs(call)
    if len(tensors) != 1 or call.layer.mask_zero:
        raise _unsupported(call, "masked embeddings")
    table = em.writer.const(em.weights(call)["embeddings"].astype(np.float32), f"{call.name}_table")
    ids = em.writer.op("Cast", [em.get(tensors[0], "keras")], "ids", to=TensorProto.INT64)
    em.set(call, em.writer.op("Gather", [table, ids], call.name, axis=0))


def _same_pads(
    call: Call, in_shape: tuple, kernel: tuple, strides: tuple, dilation: tuple
) -> list[int] | None:
    """TensorFlow's "same" padding as explicit ONNX pads (odd pixel at the end), or
    None when a spatial size is unknown (then SAME_UPPER, which is the same rule)."""
    spatial = in_shape[1:-1] if _channels_last(call.layer) else in_shape[2:]
    if any(size is None for size in spatial):
        return None
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilation, strict=True):
        effective = (k - 1) * d + 1
        out = -(-size // s)
        total = max((out - 1) * s + effective - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def _padding_attributes(
    call: Call, in_shape: tuple, kernel: tuple, strides: tuple, dilation: tuple
) -> dict[str, Any]:
    padding = call.layer.padding
    spatial = len(kernel)
    if padding == "valid":
        return {"pads": [0] * (2 * spatial)}
    if padding == "same":
        pads = _same_pads(call, in_shape, kernel, strides, dilation)
        return {"auto_pad": "SAME_UPPER"} if pads is None else {"pads": pads}
    if padding == "causal" and spatial == 1:
        return {"pads": [(kernel[0] - 1) * dilation[0], 0]}
    raise _unsupported(call, f"padding {padding!r}")


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
        attributes.update(_padding_attributes(call, in_shape, kernel_shape, strides, dilation))
    else:
        attributes["pads"] = [0] * (2 * len(kernel_shape))
    w = em.writer
    inputs = [x, w.const(weight.astype(np.float32), f"{call.name}_{hint or 'kernel'}")]
    if bias:
        inputs.append(bias)
    return w.op("Conv", inputs, hint or call.name, **attributes)


@handles(layers.Conv1D, layers.Conv2D, layers.Conv3D)
def _conv_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layer = call.layer
    layout = _conv_layout(layer)
    arrays = em.weights(call)
    y = _conv(
        em,
        call,
        em.get(tensor, layout),
        em.value(tensor).shape,
        _conv_kernel_to_onnx(arrays["kernel"]),
        _bias(em, call, arrays),
        strides=tuple(layer.strides),
        dilation=tuple(layer.dilation_rate),
        groups=int(getattr(layer, "groups", 1)),
    )
    em.set(call, _activate(em, call, y, layout), layout)


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise (*spatial, in, multiplier) -> ONNX (in*multiplier, 1, *spatial);
    output channel i*multiplier + j comes from kernel[..., i, j]."""
    spatial = kernel.ndim - 2
    flat = kernel.reshape(*kernel.shape[:spatial], -1)
    moved = flat.transpose(spatial, *range(spatial))
    return np.ascontiguousarray(moved[:, None])


@handles(layers.DepthwiseConv1D, layers.DepthwiseConv2D)
def _depthwise_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layer = call.layer
    layout = _conv_layout(layer)
    arrays = em.weights(call)
    kernel = arrays["kernel"]
    y = _conv(
        em,
        call,
        em.get(tensor, layout),
        em.value(tensor).shape,
        _depthwise_weight(kernel),
        _bias(em, call, arrays),
        strides=tuple(layer.strides),
        dilation=tuple(layer.dilation_rate),
        groups=int(kernel.shape[-2]),
    )
    em.set(call, _activate(em, call, y, layout), layout)


@handles(layers.SeparableConv1D, layers.SeparableConv2D)
def _separable_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layer = call.layer
    layout = _conv_layout(layer)
    arrays = em.weights(call)
    depthwise = arrays["depthwise_kernel"]
    mid = _conv(
        em,
        call,
        em.get(tensor, layout),
        em.value(tensor).shape,
        _depthwise_weight(depthwise),
        None,
        strides=tuple(layer.strides),
        dilation=tuple(layer.dilation_rate),
        groups=int(depthwise.shape[-2]),
        hint="depthwise",
    )
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
    em.set(call, _activate(em, call, y, layout), layout)


@handles(layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
def _conv_transpose_layer(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layer = call.layer
    layout = _conv_layout(layer)
    arrays = em.weights(call)
    kernel = arrays["kernel"]  # (*spatial, out, in)
    spatial = kernel.ndim - 2
    weight = np.ascontiguousarray(kernel.transpose(spatial + 1, spatial, *range(spatial)))
    strides = tuple(layer.strides)
    dilation = tuple(layer.dilation_rate)
    if any(d != 1 for d in dilation):
        raise _unsupported(call, "dilated transposed convolution")
    output_padding = getattr(layer, "output_padding", None)
    if output_padding is not None and any(p for p in output_padding):
        raise _unsupported(call, "output_padding")
    attributes: dict[str, Any] = {
        "kernel_shape": list(kernel.shape[:spatial]),
        "strides": list(strides),
    }
    if layer.padding == "valid":
        attributes["pads"] = [0] * (2 * spatial)
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
    em.set(call, _activate(em, call, y, layout), layout)


# -- normalisation --------------------------------------------------------------


def _single_axis(call: Call, axis: Any, rank: int) -> int:
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _unsupported(call, f"normalises over several axes {list(axis)}")
        axis = axis[0]
    return int(axis) % rank


def _channel_layout(em: Emitter, call: Call, tensor: int, axis: int) -> str:
    """The layout in which ``axis`` (a Keras axis) sits at position 1."""
    rank = _rank(em, tensor)
    if axis == 1:
        return "keras"
    if axis == rank - 1 and rank >= 3:
        return "cf"
    raise _unsupported(call, f"normalises axis {axis} of a rank-{rank} tensor")


@handles(layers.BatchNormalization)
def _batch_norm(em: Emitter, call: Call) -> None:
    if call.kwargs.get("training") is True:
        raise _unsupported(call, "called with training=True")
    tensor = _inputs(call)[0]
    rank = _rank(em, tensor)
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
    (tensor,) = _inputs(call)
    layer = call.layer
    rank = _rank(em, tensor)
    axes = sorted(a % rank for a in (layer.axis if isinstance(layer.axis, list) else [layer.axis]))
    if axes != list(range(axes[0], rank)):
        raise _unsupported(call, f"normalises non-trailing axes {axes}")
    if getattr(layer, "rms_scaling", False):
        raise _unsupported(call, "rms_scaling")
    shape = em.value(tensor).shape
    normalized = [shape[a] for a in axes]
    if any(d is None for d in normalized):
        raise _unsupported(call, "normalises a dynamic axis")
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
    (tensor,) = _inputs(call)
    layer = call.layer
    rank = _rank(em, tensor)
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
    (tensor,) = _inputs(call)
    rank = _rank(em, tensor)
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
    (tensor,) = _inputs(call)
    scale, offset = _to_numpy(call.layer.scale), _to_numpy(call.layer.offset)
    layout = em.layout_of(tensor) if scale.size == 1 and offset.size == 1 else "keras"
    w = em.writer
    y = w.op("Mul", [em.get(tensor, layout), w.const(scale, "scale")], "rescale")
    if np.any(offset != 0):
        y = w.op("Add", [y, w.const(offset, "offset")], "offset")
    em.set(call, y, layout)


@handles(layers.Normalization)
def _normalization(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
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


# -- merging --------------------------------------------------------------------


def _common_layout(em: Emitter, tensors: list[int]) -> str:
    ranks = {_rank(em, t) for t in tensors}
    if len(ranks) == 1 and any(em.layout_of(t) == "cf" for t in tensors):
        return "cf"
    return "keras"


def _merge(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensors = _inputs(call)
        layout = _common_layout(em, tensors)
        names = [em.get(t, layout) for t in tensors]
        y = names[0]
        for other in names[1:]:
            y = em.writer.op(op_type, [y, other], call.name)
        em.set(call, y, layout)

    return handler


HANDLERS[layers.Add] = _merge("Add")
HANDLERS[layers.Multiply] = _merge("Mul")
HANDLERS[layers.Maximum] = _merge("Max")
HANDLERS[layers.Minimum] = _merge("Min")


@handles(layers.Subtract)
def _subtract(em: Emitter, call: Call) -> None:
    first, second = _inputs(call)
    layout = _common_layout(em, [first, second])
    y = em.writer.op("Sub", [em.get(first, layout), em.get(second, layout)], call.name)
    em.set(call, y, layout)


@handles(layers.Average)
def _average(em: Emitter, call: Call) -> None:
    tensors = _inputs(call)
    layout = _common_layout(em, tensors)
    w = em.writer
    total = w.op("Sum", [em.get(t, layout) for t in tensors], "sum")
    em.set(call, w.op("Mul", [total, w.const(1.0 / len(tensors), "inv_n")], call.name), layout)


@handles(layers.Concatenate)
def _concatenate(em: Emitter, call: Call) -> None:
    tensors = _inputs(call)
    rank = _rank(em, tensors[0])
    axis = call.layer.axis % rank
    layout = _common_layout(em, tensors)
    onnx_axis = axis if layout == "keras" or rank < 3 else _cf_axis(axis, rank)
    names = [em.get(t, layout) for t in tensors]
    em.set(call, em.writer.op("Concat", names, call.name, axis=onnx_axis), layout)


def _cf_axis(keras_axis: int, rank: int) -> int:
    """Where Keras axis ``keras_axis`` of a channels-last tensor sits channels-first."""
    from folding.emit import to_cf

    return to_cf(rank).index(keras_axis)


@handles_named("CustomScaleLayer")
def _custom_scale(em: Emitter, call: Call) -> None:
    shortcut, residual = _inputs(call)
    layout = _common_layout(em, [shortcut, residual])
    w = em.writer
    scaled = w.op("Mul", [em.get(residual, layout), w.const(call.layer.scale, "scale")], "scaled")
    em.set(call, w.op("Add", [em.get(shortcut, layout), scaled], call.name), layout)


@handles_named("LayerScale")
def _layer_scale(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    gamma = np.asarray(call.layer.gamma.numpy())
    w = em.writer
    y = w.op("Mul", [em.get(tensor, "keras"), w.const(gamma, f"{call.name}_gamma")], call.name)
    em.set(call, y)


# -- pooling and shape ----------------------------------------------------------


def _pool(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = _inputs(call)
        layer = call.layer
        layout = _conv_layout(layer)
        pool = tuple(layer.pool_size)
        strides = tuple(layer.strides)
        attributes: dict[str, Any] = {"kernel_shape": list(pool), "strides": list(strides)}
        attributes.update(
            _padding_attributes(call, em.value(tensor).shape, pool, strides, (1,) * len(pool))
        )
        if op_type == "AveragePool":
            attributes["count_include_pad"] = 0
        y = em.writer.op(op_type, [em.get(tensor, layout)], call.name, **attributes)
        em.set(call, y, layout)

    return handler


for _cls in (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D):
    HANDLERS[_cls] = _pool("MaxPool")
for _cls in (layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D):
    HANDLERS[_cls] = _pool("AveragePool")


def _global_pool(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = _inputs(call)
        layout = _conv_layout(call.layer)
        w = em.writer
        pooled = w.op(op_type, [em.get(tensor, layout)], call.name)
        if call.layer.keepdims:
            em.set(call, pooled, layout)
        else:
            em.set(call, w.op("Flatten", [pooled], f"{call.name}_flat", axis=1))

    return handler


for _cls in (
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
):
    HANDLERS[_cls] = _global_pool("GlobalAveragePool")
for _cls in (layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D):
    HANDLERS[_cls] = _global_pool("GlobalMaxPool")


def _pairs(value: Any, spatial: int) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in pair) for pair in value][:spatial]


@handles(layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D)
def _zero_padding(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layer = call.layer
    rank = _rank(em, tensor)
    padding = layer.padding
    if isinstance(padding[0], int):
        padding = [padding]
    pairs = _pairs(padding, rank - 2)
    layout = _conv_layout(layer)
    begin = [0, 0] + [p[0] for p in pairs]
    end = [0, 0] + [p[1] for p in pairs]
    w = em.writer
    y = w.op("Pad", [em.get(tensor, layout), w.ints(begin + end, "pads")], call.name)
    em.set(call, y, layout)


@handles(layers.Cropping1D, layers.Cropping2D, layers.Cropping3D)
def _cropping(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layer = call.layer
    rank = _rank(em, tensor)
    cropping = layer.cropping
    if isinstance(cropping[0], int):
        cropping = [cropping]
    pairs = _pairs(cropping, rank - 2)
    layout = _conv_layout(layer)
    big = np.iinfo(np.int64).max
    starts = [p[0] for p in pairs]
    ends = [-p[1] if p[1] else big for p in pairs]
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
    (tensor,) = _inputs(call)
    layer = call.layer
    rank = _rank(em, tensor)
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
        raise _unsupported(call, f"interpolation {interpolation!r}")
    layout = _conv_layout(layer) if rank > 3 or isinstance(layer, layers.UpSampling1D) else "keras"
    scales = np.asarray([1.0, 1.0, *[float(s) for s in size]], dtype=np.float32)
    w = em.writer
    y = w.op(
        "Resize", [em.get(tensor, layout), "", w.const(scales, "scales")], call.name, **attributes
    )
    em.set(call, y, layout)


@handles(layers.Flatten)
def _flatten(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    layout = "keras" if _channels_last(call.layer) else "cf"
    em.set(call, em.writer.op("Flatten", [em.get(tensor, layout)], call.name, axis=1))


@handles(layers.Reshape)
def _reshape(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    w = em.writer
    target = [0, *[int(d) for d in call.layer.target_shape]]
    y = w.op("Reshape", [em.get(tensor, "keras"), w.ints(target, "shape")], call.name)
    em.set(call, y)


@handles(layers.Permute)
def _permute(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    perm = [0, *[int(d) for d in call.layer.dims]]
    em.set(call, em.writer.op("Transpose", [em.get(tensor, "keras")], call.name, perm=perm))


@handles(layers.RepeatVector)
def _repeat_vector(em: Emitter, call: Call) -> None:
    (tensor,) = _inputs(call)
    w = em.writer
    expanded = w.op("Unsqueeze", [em.get(tensor, "keras"), w.ints([1], "axis")], "expanded")
    y = w.op("Tile", [expanded, w.ints([1, int(call.layer.n), 1], "repeats")], call.name)
    em.set(call, y)


# -- Keras operations recorded in a functional graph (keras.ops.*) --------------


def _op_unary(build: Callable[[Emitter, str, Any], str], keep_layout: bool = True) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensors = _inputs(call)
        if len(tensors) != 1:
            raise _unsupported(call, "expected one tensor argument")
        layout = em.layout_of(tensors[0]) if keep_layout else "keras"
        em.set(call, build(em, em.get(tensors[0], layout), call.layer), layout)

    return handler


def _op_binary(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        from folding.graph import Ref

        operands = list(call.args)
        if len(operands) != 2 or call.kwargs:
            raise _unsupported(call, "expected two operands")
        tensors = [o.id for o in operands if isinstance(o, Ref)]
        layout = _common_layout(em, tensors) if tensors else "keras"
        if layout == "cf" and any(not isinstance(o, Ref) and np.ndim(o) > 0 for o in operands):
            layout = "keras"
        names = []
        for operand in operands:
            if isinstance(operand, Ref):
                names.append(em.get(operand.id, layout))
            elif isinstance(operand, (int, float, np.ndarray, np.generic)):
                names.append(em.writer.const(operand, "operand"))
            else:
                raise _unsupported(call, f"operand of type {type(operand).__name__}")
        em.set(call, em.writer.op(op_type, names, call.name), layout)

    return handler


OP_HANDLERS: dict[str, Handler] = {
    "Add": _op_binary("Add"),
    "Subtract": _op_binary("Sub"),
    "Multiply": _op_binary("Mul"),
    "Divide": _op_binary("Div"),
    "TrueDivide": _op_binary("Div"),
    "Maximum": _op_binary("Max"),
    "Minimum": _op_binary("Min"),
    "Gelu": _op_unary(lambda em, x, op: _gelu(em, x, bool(getattr(op, "approximate", True)))),
    "Relu": _op_unary(lambda em, x, op: em.writer.op("Relu", [x], "relu")),
    "Relu6": _op_unary(lambda em, x, op: _clip(em, x, 0.0, 6.0)),
    "Sigmoid": _op_unary(lambda em, x, op: em.writer.op("Sigmoid", [x], "sigmoid")),
    "Silu": _op_unary(lambda em, x, op: _swish(em, x)),
    "Tanh": _op_unary(lambda em, x, op: em.writer.op("Tanh", [x], "tanh")),
    "HardSigmoid": _op_unary(lambda em, x, op: ACTIVATIONS["hard_sigmoid"](em, x)),
    "HardSilu": _op_unary(lambda em, x, op: ACTIVATIONS["hard_silu"](em, x)),
    "Elu": _op_unary(
        lambda em, x, op: em.writer.op("Elu", [x], "elu", alpha=float(getattr(op, "alpha", 1.0)))
    ),
    "Selu": _op_unary(lambda em, x, op: ACTIVATIONS["selu"](em, x)),
    "Softplus": _op_unary(lambda em, x, op: em.writer.op("Softplus", [x], "softplus")),
    "Softsign": _op_unary(lambda em, x, op: em.writer.op("Softsign", [x], "softsign")),
    "Mish": _op_unary(lambda em, x, op: _mish(em, x)),
    "Exp": _op_unary(lambda em, x, op: em.writer.op("Exp", [x], "exp")),
    "Sqrt": _op_unary(lambda em, x, op: em.writer.op("Sqrt", [x], "sqrt")),
    "Abs": _op_unary(lambda em, x, op: em.writer.op("Abs", [x], "abs")),
    "Negative": _op_unary(lambda em, x, op: em.writer.op("Neg", [x], "neg")),
}
