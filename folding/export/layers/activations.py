"""Activations, as layers, layer arguments or keras.ops calls; identities at inference."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import layers

from folding.export.layers.base import (
    HANDLERS,
    OP_HANDLERS,
    Handler,
    handles,
    handles_named,
    inputs_of,
    unsupported,
)
from folding.keras_graph.fold import INFERENCE_IDENTITIES

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def activation(em: Emitter, x: str, function: Any, call: Call, layout: str = "keras") -> str:
    """Apply a Keras activation function (by identity, not by name alone); any other
    function (a library's ``quick_gelu``, a lambda) is run on a symbolic tensor and the
    ``keras.ops`` it records are written in its place."""
    name = getattr(function, "__name__", None)
    module = getattr(function, "__module__", "") or ""
    if module.startswith("keras.src.activations") and name in ACTIVATIONS:
        return ACTIVATIONS[name](em, x)
    from folding.export.direct import Unsupported

    try:
        return traced_function(em, x, function, call, layout)
    except Unsupported:
        known = known_by_values(function)
        if known is None:
            raise
        return ACTIVATIONS[known](em, x)


# where an activation is compared: dense around 0, sparse far out
_PROBES = np.concatenate([np.linspace(-12, 12, 4801), [-1e3, -100, -40, 40, 100, 1e3]])


def known_by_values(function: Any) -> str | None:
    """The Keras activation that ``function`` computes, where tracing cannot see into
    it (a library's TensorFlow-written ``hard_swish``, say): run on real values, it
    gives that activation's every value, and the same values in any arrangement (it
    is element-wise). None where no activation matches."""
    probes = _PROBES.astype("float32")
    try:
        values = np.asarray(keras.ops.convert_to_numpy(function(probes[None, :])))
        shuffled = np.random.default_rng(0).permutation(probes.size)
        again = keras.ops.convert_to_numpy(function(probes[shuffled].reshape(-1, 1)))
    except Exception:  # anything a user's function does on an array
        return None
    if values.shape != (1, probes.size) or not np.allclose(
        np.asarray(again).reshape(-1), values[0][shuffled], rtol=1e-5, atol=1e-6
    ):
        return None
    for name in ACTIVATIONS:
        if name in ("softmax", "log_softmax", "linear"):
            continue
        expected = keras.ops.convert_to_numpy(getattr(keras.activations, name)(probes))
        if np.allclose(values[0], expected, rtol=1e-5, atol=1e-6):
            return name
    return None


def traced_function(em: Emitter, x: str, function: Any, call: Call, layout: str) -> str:
    """``function`` (a tensor in, a tensor of its shape out) as the operations it is made
    of, written on ``x`` (in ``layout``, shaped as ``call``'s output)."""
    from folding.export.direct import Emitter as SubEmitter
    from folding.export.direct import Unsupported, Value
    from folding.export.layers.base import emit
    from folding.keras_graph.graph import trace

    name = getattr(function, "__name__", None) or repr(function)
    shape = em.graph.shapes[call.outputs[0]]
    try:
        symbolic = keras.Input(batch_shape=shape)
        output = function(symbolic)
        if not isinstance(output, keras.KerasTensor) or tuple(output.shape) != tuple(shape):
            raise TypeError("it does not return a tensor of its input's shape")
        graph = trace(keras.Model(symbolic, output))
    except Exception as error:  # anything a user's function does on a symbolic tensor
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise unsupported(call, f"activation {name!r} has no direct ONNX form ({detail})") from None
    inner = SubEmitter(graph, em.weights, em.writer.opset)
    inner.writer = em.writer
    inner.values[graph.inputs[0].id] = Value(tuple(shape), {layout: x})
    for step in graph.calls:
        try:
            emit(inner, step)
        except Unsupported as refused:
            raise unsupported(call, f"activation {name!r}: {refused.reason}") from None
    (result,) = graph.outputs
    return inner.get(result, layout)


def gelu(em: Emitter, x: str, approximate: bool = False) -> str:
    """Written exactly in the forms ONNX Runtime's GeluFusion and FastGeluFusion
    match (its optimizer/gelu_fusion.cc, fast_gelu_fusion.cc), so a session runs
    one fused Gelu/FastGelu kernel instead of seven element-wise passes."""
    w = em.writer
    # (0.5, x) in the tanh form, (x, 0.5) in the erf one: ONNX Runtime's
    # common-subexpression pass must not merge the two forms' halves on one input,
    # since GeluFusion then deletes the merged node the other form still reads
    half_inputs = [w.const(0.5, "half"), x] if approximate else [x, w.const(0.5, "half")]
    half = w.op("Mul", half_inputs, "gelu_half")
    if approximate:
        # 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x x))): FastGeluFusion's first formula
        # (its second starts from Pow, which it matches only up to opset 13)
        square_c = w.op("Mul", [w.op("Mul", [x, w.const(0.044715, "c")], "gelu_c"), x], "gelu_sq")
        inner = w.op("Add", [square_c, w.const(1.0, "one")], "gelu_in")
        slope = w.op("Mul", [x, w.const(math.sqrt(2 / math.pi), "s2pi")], "gelu_slope")
        scaled = w.op("Mul", [slope, inner], "gelu_scaled")
        gate = w.op("Add", [w.op("Tanh", [scaled], "gelu_tanh"), w.const(1.0, "one")], "gelu_g")
    else:
        # 0.5 x (1 + erf(x / sqrt 2)), as Div -> Erf -> Add
        erf = w.op("Erf", [w.op("Div", [x, w.const(math.sqrt(2), "sqrt2")], "gelu_s")], "erf")
        gate = w.op("Add", [erf, w.const(1.0, "one")], "gelu_g")
    return w.op("Mul", [half, gate], "gelu")


def swish(em: Emitter, x: str) -> str:
    return em.writer.op("Mul", [x, em.writer.op("Sigmoid", [x], "sigmoid")], "silu")


def mish(em: Emitter, x: str) -> str:
    w = em.writer
    return w.op("Mul", [x, w.op("Tanh", [w.op("Softplus", [x], "softplus")], "tanh")], "mish")


def clip(em: Emitter, x: str, low: float | None, high: float | None) -> str:
    w = em.writer
    low_name = w.const(low, "min") if low is not None else ""
    high_name = w.const(high, "max") if high is not None else ""
    return w.op("Clip", [x, low_name, high_name], "clip")


ACTIVATIONS: dict[str, Callable[[Emitter, str], str]] = {
    "linear": lambda em, x: x,
    "relu": lambda em, x: em.writer.op("Relu", [x], "relu"),
    "relu6": lambda em, x: clip(em, x, 0.0, 6.0),
    "sigmoid": lambda em, x: em.writer.op("Sigmoid", [x], "sigmoid"),
    "hard_sigmoid": lambda em, x: em.writer.op(
        "HardSigmoid", [x], "hard_sigmoid", alpha=1 / 6, beta=0.5
    ),
    "hard_silu": lambda em, x: em.writer.op("HardSwish", [x], "hard_silu"),
    "hard_swish": lambda em, x: em.writer.op("HardSwish", [x], "hard_silu"),
    "tanh": lambda em, x: em.writer.op("Tanh", [x], "tanh"),
    "silu": swish,
    "swish": swish,
    "gelu": gelu,
    "elu": lambda em, x: em.writer.op("Elu", [x], "elu", alpha=1.0),
    "selu": lambda em, x: em.writer.op(
        "Selu", [x], "selu", alpha=1.6732632423543772, gamma=1.0507009873554805
    ),
    "softplus": lambda em, x: em.writer.op("Softplus", [x], "softplus"),
    "softsign": lambda em, x: em.writer.op("Softsign", [x], "softsign"),
    "mish": mish,
    "exponential": lambda em, x: em.writer.op("Exp", [x], "exp"),
    "leaky_relu": lambda em, x: em.writer.op("LeakyRelu", [x], "leaky_relu", alpha=0.2),
    "softmax": lambda em, x: em.writer.op("Softmax", [x], "softmax", axis=-1),
    "log_softmax": lambda em, x: em.writer.op("LogSoftmax", [x], "log_softmax", axis=-1),
}


def activate_argument(em: Emitter, call: Call, x: str, layout: str) -> str:
    """The layer's own ``activation`` argument, applied to ``x``."""
    function = getattr(call.layer, "activation", None)
    if function is None or function is keras.activations.linear:
        return x
    name = getattr(function, "__name__", "")
    module = getattr(function, "__module__", "") or ""
    if name in ("softmax", "log_softmax") and layout == "cf":
        if not module.startswith("keras.src.activations") or em.writer.opset < 13:
            raise unsupported(call, "softmax over a channels-first tensor")
        # Keras' softmax is over the last axis, the channels: axis 1 of a channels-first
        # tensor (from opset 13 on, Softmax normalises along that one axis alone)
        op_type = "Softmax" if name == "softmax" else "LogSoftmax"
        return em.writer.op(op_type, [x], name, axis=1)
    return activation(em, x, function, call, layout)


@handles(layers.Activation)
def _activation_layer(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    name = getattr(call.layer.activation, "__name__", "")
    layout = "keras" if name in ("softmax", "log_softmax") else em.layout_of(tensor)
    x = em.get(tensor, layout)
    em.set(call, activation(em, x, call.layer.activation, call, layout), layout)


@handles(layers.ReLU)
def _relu_layer(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    layout = em.layout_of(tensor)
    x = em.get(tensor, layout)
    layer, w = call.layer, em.writer
    slope = float(layer.negative_slope or 0.0)
    threshold = float(layer.threshold or 0.0)
    if threshold == 0.0 and not slope and layer.max_value is not None:
        # one Clip, which ONNX Runtime fuses into the convolution before it
        em.set(call, clip(em, x, 0.0, float(layer.max_value)), layout)
        return
    if threshold == 0.0:
        y = w.op("LeakyRelu", [x], "leaky_relu", alpha=slope) if slope else w.op("Relu", [x], "r")
    else:
        shifted = w.op("Sub", [x, w.const(threshold, "threshold")], "shifted")
        below = w.op("Mul", [shifted, w.const(slope, "slope")], "below")
        above = w.op("GreaterOrEqual", [x, w.const(threshold, "threshold")], "above")
        y = w.op("Where", [above, x, below], "relu")
    if layer.max_value is not None:
        y = clip(em, y, None, float(layer.max_value))
    em.set(call, y, layout)


# keras.activations.relu called on a tensor records this operation, with the layer's settings
OP_HANDLERS["ReLU"] = _relu_layer


def _alpha_layer(op_type: str, attribute: str, hint: str) -> Handler:
    """A layer that is one ONNX ``op_type`` whose ``alpha`` is the layer's ``attribute``."""

    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        layout = em.layout_of(tensor)
        alpha = float(getattr(call.layer, attribute))
        em.set(call, em.writer.op(op_type, [em.get(tensor, layout)], hint, alpha=alpha), layout)

    return handler


HANDLERS[layers.LeakyReLU] = _alpha_layer("LeakyRelu", "negative_slope", "leaky")
HANDLERS[layers.ELU] = _alpha_layer("Elu", "alpha", "elu")


@handles(layers.Softmax)
def _softmax_layer(em: Emitter, call: Call) -> None:
    """Keras' Softmax: with a mask, the masked positions are set to -1e9 before and to 0
    after (a mask that is not boolean keeps the positions above 0.5)."""
    from onnx import TensorProto

    tensors = inputs_of(call)
    if len(tensors) > 2:
        raise unsupported(call, f"a softmax of {len(tensors)} tensors")
    axis = call.layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise unsupported(call, f"softmax over several axes {list(axis)}")
        axis = axis[0]
    w = em.writer
    x = em.get(tensors[0], "keras")
    if len(tensors) == 1:
        em.set(call, w.op("Softmax", [x], "softmax", axis=axis))
        return
    mask = w.op("Cast", [em.get(tensors[1], "keras")], "mask_f32", to=TensorProto.FLOAT)
    keep = w.op("Greater", [mask, w.const(0.5, "half")], "mask_keep")
    masked = w.op("Where", [keep, x, w.const(-1e9, "large_negative")], "masked")
    y = w.op("Softmax", [masked], "softmax", axis=axis)
    em.set(call, w.op("Where", [keep, y, w.const(0.0, "zero")], "softmax_masked"))


@handles(layers.PReLU)
def _prelu_layer(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    alpha = em.weights(call)["alpha"]
    slope = em.writer.const(alpha.astype(np.float32), "prelu_slope")
    em.set(call, em.writer.op("PRelu", [em.get(tensor, "keras"), slope], "prelu"))


# -- identities ---------------------------------------------------------------


@handles(*INFERENCE_IDENTITIES, layers.Identity, layers.ActivityRegularization)
def _identity(em: Emitter, call: Call) -> None:
    em.alias(call, inputs_of(call)[0])


@handles_named("StochasticDepth")
def _stochastic_depth(em: Emitter, call: Call) -> None:
    if call.kwargs.get("training") is True:
        raise unsupported(call, "called with training=True")
    em.alias(call, inputs_of(call)[0])
