"""Keras 2's ``TFOpLambda`` layers, and its applications' own layers, in Keras 3.

A Keras 2 functional model that applies a TensorFlow function or an operator to
a symbolic tensor (``x + 3.0``, ``tf.nn.relu6(x)``, ``tf.concat([a, b], -1)``,
``x[:, 1:]``) saves the call as a ``TFOpLambda`` (or ``SlicingOpLambda``) layer
naming the function, with the call's arguments in its inbound node. Keras 3 has
no such layer. Each is translated into :class:`TensorFlowCall`, which computes
the named function with ``keras.ops`` (so the direct exporter traces into it),
its node rewritten in Keras 3's ``{"args", "kwargs"}`` form. A function not in
:data:`FUNCTIONS` is refused, naming it.

The layers Keras 2's applications define for themselves (ConvNeXt's
``LayerScale`` and ``StochasticDepth``, InceptionResNetV2's ``CustomScaleLayer``)
are translated into layers of the same weights computing the same at inference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from folding.errors import ModelLoadError

CONSTANT = "_CONSTANT_VALUE"  # Keras 2's marker for a first argument that is not a tensor
LEADING_CONSTANT = "leading_constant"
TENSOR_KEYWORD = "tensor_keyword"
"""Keras 3 takes only tensors positionally: ``f(1.0, y=x)`` is stored as the call
``layer(x, leading_constant=1.0, tensor_keyword="y")``."""


def _reduce(function: Callable) -> Callable:
    def reduce(input_tensor, axis=None, keepdims=False):
        if isinstance(input_tensor, (list, tuple)):  # TensorFlow packs a list of tensors
            input_tensor = ops.stack(list(input_tensor))
        return function(input_tensor, axis=_axes(axis), keepdims=bool(keepdims))

    return reduce


def _axes(axis: Any) -> Any:
    return tuple(axis) if isinstance(axis, list) else axis


def _tensor(value: Any) -> Any:
    """A constant operand written as a nested list in the config, as an array."""
    return np.asarray(value, dtype="float32") if isinstance(value, list) else value


def _binary(function: Callable) -> Callable:
    def binary(x, y):
        return function(_tensor(x), _tensor(y))

    return binary


def _matmul(a, b, transpose_a=False, transpose_b=False, **_):
    a, b = _tensor(a), _tensor(b)
    if transpose_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


def _transpose(a, perm=None, conjugate=False):
    return ops.transpose(a, axes=perm)


def _resize(images, size, method="bilinear", preserve_aspect_ratio=False, antialias=False):
    if preserve_aspect_ratio:
        raise ValueError("tf.image.resize with preserve_aspect_ratio=True")
    return ops.image.resize(images, tuple(size), interpolation=method, antialias=antialias)


def _split(value, num_or_size_splits, axis=0, num=None):
    if isinstance(num_or_size_splits, list):
        indices = np.cumsum(num_or_size_splits)[:-1].tolist()
        return ops.split(value, indices, axis=axis)
    return ops.split(value, num_or_size_splits, axis=axis)


def _pad(tensor, paddings, mode="CONSTANT", constant_values=0):
    return ops.pad(tensor, paddings, mode=str(mode).lower(), constant_values=constant_values)


def _getitem(tensor, slice_spec):
    def index(item):
        if isinstance(item, dict):
            return slice(item.get("start"), item.get("stop"), item.get("step"))
        if item in ("Ellipsis", "..."):
            return Ellipsis
        return item

    spec = slice_spec if isinstance(slice_spec, list) else [slice_spec]
    return tensor[tuple(index(item) for item in spec)]


def _l2_normalize(x, axis=None, epsilon=1e-12, dim=None):
    axis = _axes(dim if axis is None else axis)
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, epsilon))


def _depth_to_space(x, block_size):
    _, height, width, channels = x.shape
    depth = channels // (block_size * block_size)
    x = ops.reshape(x, (-1, height, width, block_size, block_size, depth))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height * block_size, width * block_size, depth))


FUNCTIONS: dict[str, Callable] = {
    "__operators__.add": _binary(ops.add),
    "math.add": _binary(ops.add),
    "math.add_n": lambda inputs: ops.sum(ops.stack(inputs), axis=0),
    "math.subtract": _binary(ops.subtract),
    "math.multiply": _binary(ops.multiply),
    "math.truediv": _binary(ops.divide),
    "math.divide": _binary(ops.divide),
    "math.maximum": _binary(ops.maximum),
    "math.minimum": _binary(ops.minimum),
    "math.pow": _binary(ops.power),
    "math.squared_difference": lambda x, y: ops.square(ops.subtract(x, _tensor(y))),
    "math.negative": lambda x: ops.negative(x),
    "math.abs": lambda x: ops.abs(x),
    "math.square": lambda x: ops.square(x),
    "math.sqrt": lambda x: ops.sqrt(x),
    "math.rsqrt": lambda x: ops.rsqrt(x),
    "math.exp": lambda x: ops.exp(x),
    "math.log": lambda x: ops.log(x),
    "math.reciprocal": lambda x: ops.reciprocal(x),
    "math.erf": lambda x: ops.erf(x),
    "math.sigmoid": lambda x: ops.sigmoid(x),
    "nn.sigmoid": lambda x: ops.sigmoid(x),
    "math.tanh": lambda x: ops.tanh(x),
    "nn.tanh": lambda x: ops.tanh(x),
    "math.softplus": lambda features: ops.softplus(features),
    "nn.relu": lambda features: ops.relu(features),
    "nn.relu6": lambda features: ops.relu6(features),
    "nn.elu": lambda features: ops.elu(features),
    "nn.selu": lambda features: ops.selu(features),
    "nn.silu": lambda features, beta=1.0: features * ops.sigmoid(beta * features),
    "nn.swish": lambda features, beta=1.0: features * ops.sigmoid(beta * features),
    "nn.gelu": lambda features, approximate=False: ops.gelu(features, approximate=approximate),
    "nn.leaky_relu": lambda features, alpha=0.2: ops.leaky_relu(features, negative_slope=alpha),
    "nn.softmax": lambda logits, axis=-1: ops.softmax(logits, axis=axis),
    "math.softmax": lambda logits, axis=-1: ops.softmax(logits, axis=axis),
    "nn.bias_add": lambda value, bias, data_format=None: ops.add(value, _tensor(bias)),
    "clip_by_value": lambda t, clip_value_min, clip_value_max: ops.clip(
        t, clip_value_min, clip_value_max
    ),
    "math.reduce_mean": _reduce(ops.mean),
    "math.reduce_sum": _reduce(ops.sum),
    "math.reduce_max": _reduce(ops.max),
    "math.reduce_min": _reduce(ops.min),
    "math.reduce_prod": _reduce(ops.prod),
    "math.l2_normalize": _l2_normalize,
    "nn.l2_normalize": _l2_normalize,
    "linalg.matmul": _matmul,
    "matmul": _matmul,
    "einsum": lambda equation, *inputs: ops.einsum(equation, *map(_tensor, inputs)),
    "reshape": lambda tensor, shape: ops.reshape(tensor, tuple(shape)),
    "transpose": _transpose,
    "compat.v1.transpose": _transpose,
    "expand_dims": lambda input, axis: ops.expand_dims(input, axis),
    "squeeze": lambda input, axis=None: ops.squeeze(input, axis=_axes(axis)),
    "compat.v1.squeeze": lambda input, axis=None, squeeze_dims=None: ops.squeeze(
        input, axis=_axes(axis if axis is not None else squeeze_dims)
    ),
    "concat": lambda values, axis: ops.concatenate(list(values), axis=axis),
    "stack": lambda values, axis=0: ops.stack(list(values), axis=axis),
    "split": _split,
    "tile": lambda input, multiples: ops.tile(input, tuple(multiples)),
    "pad": _pad,
    "compat.v1.pad": _pad,
    "identity": lambda input: ops.copy(input),
    "cast": lambda x, dtype: ops.cast(x, dtype),
    "image.resize": _resize,
    "nn.depth_to_space": lambda input, block_size, data_format="NHWC": _depth_to_space(
        input, block_size
    ),
    "__operators__.getitem": _getitem,
}
"""The TensorFlow functions (as Keras 2 names them) a ``TFOpLambda`` may call, each
computed with ``keras.ops`` under the same argument names."""


@keras.saving.register_keras_serializable(package="foldserve")
class TensorFlowCall(keras.layers.Layer):
    """A Keras 2 ``TFOpLambda``: the TensorFlow function ``function``, with keras.ops."""

    def __init__(self, function: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function = function
        self._compute = FUNCTIONS[function]

    def call(self, *args: Any, **kwargs: Any) -> Any:
        for keyword in ("name", "training", "mask"):  # none of the functions takes them
            kwargs.pop(keyword, None)
        if LEADING_CONSTANT in kwargs:  # f(constant, y=tensor), called as f(tensor)
            kwargs[kwargs.pop(TENSOR_KEYWORD)] = args[0]
            args = (kwargs.pop(LEADING_CONSTANT), *args[1:])
        return self._compute(*args, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "function": self.function}


@keras.saving.register_keras_serializable(package="foldserve")
class LayerScale(keras.layers.Layer):
    """Keras 2 ConvNeXt's LayerScale: the input times a learned per-channel ``gamma``."""

    def __init__(self, init_values: float, projection_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_values = init_values
        self.projection_dim = projection_dim

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(
            name="gamma",
            shape=(self.projection_dim,),
            initializer=keras.initializers.Constant(self.init_values),
        )

    def call(self, x: Any) -> Any:
        return x * self.gamma

    def get_config(self) -> dict:
        config = super().get_config()
        return {**config, "init_values": self.init_values, "projection_dim": self.projection_dim}


@keras.saving.register_keras_serializable(package="foldserve")
class StochasticDepth(keras.layers.Layer):
    """Keras 2 ConvNeXt's StochasticDepth: the identity at inference."""

    def __init__(self, drop_path_rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drop_path_rate = drop_path_rate

    def call(self, x: Any, training: Any = None) -> Any:
        return x

    def get_config(self) -> dict:
        return {**super().get_config(), "drop_path_rate": self.drop_path_rate}


@keras.saving.register_keras_serializable(package="foldserve")
class CustomScaleLayer(keras.layers.Layer):
    """Keras 2 InceptionResNetV2's residual sum: ``inputs[0] + inputs[1] * scale``."""

    def __init__(self, scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs: Any) -> Any:
        return inputs[0] + inputs[1] * self.scale

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def _channel_slice(x, start, stop, axis):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _expand_channels(x, channels_axis, spatial):
    """classification_models' ``expand_dims``: pooled channels as an image of one pixel."""
    for _ in range(spatial):
        x = ops.expand_dims(x, 1 if channels_axis != 1 else -1)
    return x


LIBRARY_FUNCTIONS: dict[str, Callable] = {
    "slice": _channel_slice,
    "expand_2d": lambda x, channels_axis: _expand_channels(x, channels_axis, 2),
    "expand_3d": lambda x, channels_axis: _expand_channels(x, channels_axis, 3),
    "scaled_sum": lambda inputs, scale: inputs[0] + inputs[1] * scale,
}
"""The Keras 2 libraries' Lambda functions (``folding.sources.keras.known_lambdas``),
computed with keras.ops."""


@keras.saving.register_keras_serializable(package="foldserve")
class LibraryFunction(keras.layers.Layer):
    """A Keras 2 library's ``Lambda`` layer, recognised by its config, never run:
    ``function`` (of :data:`LIBRARY_FUNCTIONS`) called with the layer's ``arguments``."""

    def __init__(self, function: str, arguments: dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function = function
        self.arguments = dict(arguments)
        self._compute = LIBRARY_FUNCTIONS[function]

    def call(self, inputs: Any) -> Any:
        return self._compute(inputs, **self.arguments)

    def get_config(self) -> dict:
        return {**super().get_config(), "function": self.function, "arguments": self.arguments}


def translate_known_lambda(layer: dict, function: str) -> dict:
    """A recognised Keras 2 ``Lambda`` layer entry as a :class:`LibraryFunction` entry."""
    config = layer["config"]
    keep = {key: value for key, value in config.items() if key in BASE_OPTIONS}
    return {
        **{key: value for key, value in layer.items() if key not in {"module", "build_config"}},
        "class_name": registered(LibraryFunction),
        "registered_name": registered(LibraryFunction),
        "module": None,
        "config": {**keep, "function": function, "arguments": config["arguments"]},
    }


APPLICATION_LAYERS = {
    "LayerScale": ({"init_values", "projection_dim"}, LayerScale),
    "StochasticDepth": ({"drop_path_rate"}, StochasticDepth),
    "CustomScaleLayer": ({"scale"}, CustomScaleLayer),
    "Custom>CustomScaleLayer": ({"scale"}, CustomScaleLayer),
}
"""Keras 2 applications' own layers: the options that identify each, and its Keras 3 form."""

BASE_OPTIONS = {"name", "trainable", "dtype"}


def registered(layer: type) -> str:
    return keras.saving.get_registered_name(layer)


def translate_application_layer(layer: dict) -> bool:
    """Point a Keras 2 ConvNeXt ``LayerScale`` / ``StochasticDepth`` at its Keras 3
    form (in place); True when ``layer`` was one."""
    known = APPLICATION_LAYERS.get(layer.get("class_name"))
    config = layer.get("config")
    if known is None or not isinstance(config, dict):
        return False
    options, target = known
    module = layer.get("module")
    if set(config) - BASE_OPTIONS != options or (module and "applications" not in module):
        return False
    layer.update(class_name=registered(target), module=None, registered_name=registered(target))
    return True


def translate_op_layer(layer: dict, label: str) -> dict:
    """A Keras 2 ``TFOpLambda`` / ``SlicingOpLambda`` layer entry as a
    :class:`TensorFlowCall` entry whose nodes are in Keras 3's form."""
    config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    name = config.get("name", "?")
    function = config.get("function")
    if function not in FUNCTIONS:
        raise ModelLoadError(
            f"'{label}': layer '{name}' calls tf.{function}, a TensorFlow function with "
            "no Keras 3 translation here; rewrite that step with a Keras layer or keras.ops"
        )
    nodes = [_node(data, name, label) for data in layer.get("inbound_nodes") or []]
    keep = {key: value for key, value in config.items() if key in BASE_OPTIONS}
    return {
        **{key: value for key, value in layer.items() if key not in {"module", "build_config"}},
        "class_name": registered(TensorFlowCall),
        "registered_name": registered(TensorFlowCall),
        "module": None,
        "config": {**keep, "function": function},
        "inbound_nodes": nodes,
    }


def _is_reference(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and isinstance(item[2], int)
    )


def _tensor_reference(item: list) -> dict:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [], "dtype": "float32", "keras_history": list(item[:3])},
    }


def _references(value: Any) -> Any:
    if _is_reference(value):
        return _tensor_reference(value)
    if isinstance(value, list):
        return [_references(item) for item in value]
    if isinstance(value, dict):
        return {key: _references(item) for key, item in value.items()}
    return value


def _node(data: Any, name: str, label: str) -> dict:
    """One Keras 2 op-layer node (``[layer, node, tensor, kwargs]``, or a list of them
    for a list first argument) as ``{"args": [...], "kwargs": {...}}``."""
    if isinstance(data, dict):  # already in Keras 3's form
        return data
    if isinstance(data, list) and len(data) == 4 and isinstance(data[0], str):
        first = data[2] if data[0] == CONSTANT else _tensor_reference(data[:3])
        kwargs = data[3]
    elif (
        isinstance(data, list)
        and data
        and all(isinstance(item, list) and len(item) >= 3 for item in data)
    ):
        first = [item[2] if item[0] == CONSTANT else _tensor_reference(item[:3]) for item in data]
        kwargs = data[-1][3] if len(data[-1]) > 3 else {}
    else:
        raise ModelLoadError(f"'{label}': layer '{name}' has an inbound node of unknown form")
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"'{label}': layer '{name}' has call arguments of unknown form")
    kwargs = {key: _references(value) for key, value in kwargs.items() if key != "name"}
    if data[0] == CONSTANT:
        keyword = next((key for key, value in kwargs.items() if _is_tensor(value)), None)
        if keyword is None:
            raise ModelLoadError(f"'{label}': layer '{name}' is called on no tensor")
        tensor = kwargs.pop(keyword)
        kwargs.update({LEADING_CONSTANT: first, TENSOR_KEYWORD: keyword})
        first = tensor
    return {"args": [first], "kwargs": kwargs}


def _is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"
