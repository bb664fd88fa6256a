"""Decide where each BatchNormalization folds, apply the weights, rebuild.

The rules:

* **backward** into the layer before it (Dense, ConvND, DepthwiseConvND,
  SeparableConvND, ConvNDTranspose) when that layer's activation is linear,
  its output feeds nothing but the BatchNormalization, it is not shared, and
  the BatchNormalization normalises its channel axis;
* otherwise **forward** into the layer after it: a Dense (possibly through a
  Flatten) or a ConvND with ``valid`` padding and one group, when the
  BatchNormalization's output feeds nothing else;
* otherwise it stays, and the report says why.

Dropout-like layers, identities at inference, are removed first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from folding import math
from folding.diagnostics import diagnose
from folding.keras_graph.graph import Call, Graph, InputSpec, layers_inside, rebuild, trace
from folding.report import (
    BatchNormStats,
    FoldedEntry,
    NotFoldedEntry,
    Recalibration,
    RemovedEntry,
)

INFERENCE_IDENTITIES: tuple[type, ...] = (
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
)


@dataclass(frozen=True)
class _Kind:
    kernel: str  # name of the kernel variable the scale goes into
    output_axis: int  # kernel axis of the output channels
    depthwise: bool = False


_BACKWARD_KINDS: dict[type, _Kind] = {
    layers.Dense: _Kind("kernel", -1),
    layers.Conv1D: _Kind("kernel", -1),
    layers.Conv2D: _Kind("kernel", -1),
    layers.Conv3D: _Kind("kernel", -1),
    layers.DepthwiseConv1D: _Kind("kernel", -1, depthwise=True),
    layers.DepthwiseConv2D: _Kind("kernel", -1, depthwise=True),
    layers.SeparableConv1D: _Kind("pointwise_kernel", -1),
    layers.SeparableConv2D: _Kind("pointwise_kernel", -1),
    layers.Conv1DTranspose: _Kind("kernel", -2),
    layers.Conv2DTranspose: _Kind("kernel", -2),
    layers.Conv3DTranspose: _Kind("kernel", -2),
}
_FORWARD_KINDS: tuple[type, ...] = (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D)


@dataclass
class FoldResult:
    """The folded graph, its new weights, and what was done to get it.

    ``graph`` is the traced graph with every folded BatchNormalization (and every
    Dropout-like layer) bypassed; ``weights(call)`` gives each layer's arrays, the
    folded ones for layers that absorbed a BatchNormalization. ``model`` rebuilds
    the folded graph as a Keras model (on first use: exporting does not need it).
    """

    source: keras.Model
    graph: Graph
    inputs: list[InputSpec]
    output_names: list[str]
    folded: list[FoldedEntry] = field(default_factory=list)
    not_folded: list[NotFoldedEntry] = field(default_factory=list)
    removed: list[RemovedEntry] = field(default_factory=list)
    recalibration: Recalibration | None = None
    edits: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    _model: keras.Model | None = None

    def weights(self, call: Call) -> dict[str, np.ndarray]:
        edited = self.edits.get(id(call.layer))
        if edited is not None:
            return edited
        return {variable.name: np.asarray(variable.numpy()) for variable in call.layer.weights}

    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = _build_keras(self)
        return self._model


def _build_keras(result: FoldResult) -> keras.Model:
    replacements: dict[int, keras.layers.Layer] = {}

    def layer_for(call: Call) -> keras.layers.Layer:
        if id(call.layer) not in result.edits:
            return call.layer
        config = call.layer.get_config()
        config["use_bias"] = True
        replacement = type(call.layer).from_config(config)
        replacements[id(call.layer)] = replacement
        return replacement

    model = rebuild(result.graph, layer_for)
    for layer_id, replacement in replacements.items():
        arrays = result.edits[layer_id]
        for variable in replacement.weights:
            variable.assign(arrays[variable.name])
    return model


class _NotFoldable(Exception):
    """Why one direction of folding is not possible, in words."""


@dataclass
class _Edit:
    """New weight arrays for one layer that absorbs one or more BatchNormalizations."""

    call: Call
    arrays: dict[str, np.ndarray]


def fold_model(
    model: keras.Model,
    calibration: list[np.ndarray] | None = None,
    recalibrate_on: list[np.ndarray] | None = None,
) -> FoldResult:
    """Fold every BatchNormalization of ``model`` that can be folded.

    With ``recalibrate_on`` (one array per input), every BN's moving statistics
    are first re-estimated on that data (``folding.keras_graph.recalibrate``; ``model`` is
    changed in place). With ``calibration`` (or else ``recalibrate_on``), each
    BN's diagnostics include its variance shift on that data.
    """
    from folding.keras_graph import recalibrate

    recalibration = None
    if recalibrate_on is not None:
        recalibration = recalibrate.recalibrate(model, recalibrate_on)
    data = calibration if calibration is not None else recalibrate_on
    observed = {} if data is None else recalibrate.input_statistics(model, data)
    graph = trace(model)
    result = FoldResult(
        source=model,
        graph=graph,
        inputs=list(graph.inputs),
        output_names=list(graph.output_names),
        recalibration=recalibration,
    )
    for call in [c for c in graph.calls if type(c.layer) in INFERENCE_IDENTITIES]:
        graph.bypass(call)
        result.removed.append(RemovedEntry(call.name, type(call.layer).__name__))
    folder = _Folder(graph, {name: stats.variance for name, stats in observed.items()})
    folder.run()
    result.folded, result.not_folded = (
        folder.folded,
        folder.not_folded + _inside_whole_layers(graph),
    )
    result.edits = {layer_id: edit.arrays for layer_id, edit in folder.edits.items()}
    return result


def _inside_whole_layers(graph: Graph) -> list[NotFoldedEntry]:
    """The BatchNormalizations hidden inside layers kept as one call (their ``call``
    could not be traced into): not folded, each with the reason."""
    entries = []
    for call in graph.calls:
        if not isinstance(call.layer, keras.layers.Layer):
            continue
        why = f"its call could not be traced ({call.opaque})" if call.opaque else "it is kept whole"
        for inner in layers_inside(call.layer):
            if type(inner) is not layers.BatchNormalization:
                continue
            stats = batch_norm_stats(batch_norm_params(inner)) if inner.built else None
            entries.append(
                NotFoldedEntry(
                    f"{call.name}/{inner.name}",
                    f"inside layer '{call.name}' ({type(call.layer).__name__}), whose "
                    f"BatchNormalizations cannot be reached: {why}",
                    stats,
                    None,
                )
            )
    return entries


def _is_batch_norm(call: Call) -> bool:
    return type(call.layer) is layers.BatchNormalization


def batch_norm_params(bn: layers.BatchNormalization) -> math.BatchNormParams:
    return math.BatchNormParams(
        moving_mean=np.asarray(bn.moving_mean.numpy()),
        moving_variance=np.asarray(bn.moving_variance.numpy()),
        gamma=np.asarray(bn.gamma.numpy()) if bn.scale else None,
        beta=np.asarray(bn.beta.numpy()) if bn.center else None,
        epsilon=float(bn.epsilon),
    )


def batch_norm_stats(params: math.BatchNormParams) -> BatchNormStats:
    return BatchNormStats.of(params, params.scale())


def _channel_axis(layer: keras.layers.Layer, rank: int) -> int:
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1


class _Folder:
    def __init__(self, graph: Graph, observed_variance: dict[str, np.ndarray]) -> None:
        self.graph = graph
        self.observed_variance = observed_variance
        self.folded: list[FoldedEntry] = []
        self.not_folded: list[NotFoldedEntry] = []
        self.edits: dict[int, _Edit] = {}

    def run(self) -> None:
        reasons: dict[int, tuple[Call, str]] = {}
        progress = True
        while progress:
            progress = False
            for call in [c for c in self.graph.calls if _is_batch_norm(c)]:
                try:
                    self._fold(call)
                except _NotFoldable as reason:
                    reasons[id(call)] = (call, str(reason))
                else:
                    reasons.pop(id(call), None)
                    progress = True
        for call, reason in reasons.values():
            stats = diagnostics = None
            if call.layer.built:
                params = batch_norm_params(call.layer)
                stats = batch_norm_stats(params)
                diagnostics = diagnose(
                    params, [params.scale(), params.shift()], self.observed_variance.get(call.name)
                )
            self.not_folded.append(NotFoldedEntry(call.name, reason, stats, diagnostics))

    # -- one BatchNormalization ------------------------------------------------

    def _fold(self, bn: Call) -> None:
        if bn.kwargs.get("training") is True:
            raise _NotFoldable("called with training=True: it normalises with batch statistics")
        rank = len(self.graph.shapes[bn.first_input])
        axis = bn.layer.axis
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise _NotFoldable(f"normalises over several axes {list(axis)}")
            axis = axis[0]
        axis %= rank
        params = batch_norm_params(bn.layer)
        try:
            target = self._fold_backward(bn, axis, rank, params)
            direction = "backward"
        except _NotFoldable as backward:
            try:
                target = self._fold_forward(bn, axis, params)
                direction = "forward"
            except _NotFoldable as forward:
                raise _NotFoldable(
                    f"cannot fold backward ({backward}) nor forward ({forward})"
                ) from None
        self.graph.bypass(bn)
        folded_arrays = list(self.edits[id(target.layer)].arrays.values())
        diagnostics = diagnose(params, folded_arrays, self.observed_variance.get(bn.name))
        self.folded.append(
            FoldedEntry(
                bn.name,
                target.name,
                type(target.layer).__name__,
                direction,
                batch_norm_stats(params),
                diagnostics,
            )
        )

    def _sole_consumer(self, tensor: int, what: str) -> Call:
        users = self.graph.consumers().get(tensor, [])
        if tensor in self.graph.outputs:
            raise _NotFoldable(f"{what} is also a model output")
        if len(users) != 1:
            names = ", ".join(f"'{u.name}'" for u in users)
            raise _NotFoldable(f"{what} feeds {len(users)} layers ({names})")
        return users[0]

    def _check_exclusive(self, call: Call) -> None:
        layer = call.layer
        if self.graph.calls_per_layer()[id(layer)] > 1:
            raise _NotFoldable(f"'{call.name}' is shared by several calls")
        if getattr(layer, "lora_enabled", False):
            raise _NotFoldable(f"'{call.name}' has LoRA enabled")
        if getattr(layer, "quantization_mode", None):
            raise _NotFoldable(f"'{call.name}' is quantized")
        if not layer.built:
            raise _NotFoldable(f"'{call.name}' is not built")

    def _edit(self, call: Call) -> _Edit:
        if id(call.layer) not in self.edits:
            arrays = {v.name: np.asarray(v.numpy()) for v in call.layer.weights}
            self.edits[id(call.layer)] = _Edit(call, arrays)
        return self.edits[id(call.layer)]

    def _fold_backward(self, bn: Call, axis: int, rank: int, params: math.BatchNormParams) -> Call:
        producer = self.graph.producers().get(bn.first_input)
        if producer is None:
            raise _NotFoldable("its input is a model input")
        kind = _BACKWARD_KINDS.get(type(producer.layer))
        if kind is None:
            raise _NotFoldable(
                f"'{producer.name}' is a {type(producer.layer).__name__}, which has no weights "
                "to fold into"
            )
        if getattr(producer.layer, "activation", None) is not keras.activations.linear:
            activation = getattr(producer.layer.activation, "__name__", "custom")
            raise _NotFoldable(f"'{producer.name}' applies activation '{activation}' first")
        self._sole_consumer(bn.first_input, f"the output of '{producer.name}'")
        self._check_exclusive(producer)
        channel_axis = _channel_axis(producer.layer, rank)
        if axis != channel_axis:
            raise _NotFoldable(
                f"it normalises axis {axis}, not the channel axis {channel_axis} of "
                f"'{producer.name}'"
            )
        edit = self._edit(producer)
        kernel, bias = edit.arrays[kind.kernel], edit.arrays.get("bias")
        if kind.depthwise:
            kernel, bias = math.fold_into_preceding_depthwise(kernel, bias, params)
        else:
            kernel, bias = math.fold_into_preceding(kernel, bias, params, kind.output_axis)
        edit.arrays[kind.kernel], edit.arrays["bias"] = kernel, bias
        return producer

    def _fold_forward(self, bn: Call, axis: int, params: math.BatchNormParams) -> Call:
        output = bn.outputs[0]
        consumer = self._sole_consumer(output, "its output")
        scale, shift = params.scale(), params.shift()
        shape = self.graph.shapes[output]
        if type(consumer.layer) is layers.Flatten:
            if any(dim is None for dim in shape[1:]):
                raise _NotFoldable(f"the Flatten '{consumer.name}' sees a dynamic shape {shape}")
            scale = _flatten_like(consumer.layer, scale, shape, axis)
            shift = _flatten_like(consumer.layer, shift, shape, axis)
            flatten = consumer
            consumer = self._sole_consumer(flatten.outputs[0], f"the output of '{flatten.name}'")
            if type(consumer.layer) is not layers.Dense:
                raise _NotFoldable(
                    f"'{flatten.name}' feeds a {type(consumer.layer).__name__}, not a Dense"
                )
        elif type(consumer.layer) not in _FORWARD_KINDS:
            raise _NotFoldable(
                f"it feeds '{consumer.name}', a {type(consumer.layer).__name__}, which has no "
                "weights to fold into"
            )
        elif axis != _channel_axis(consumer.layer, len(shape)):
            raise _NotFoldable(
                f"it normalises axis {axis}, not the input channel axis of '{consumer.name}'"
            )
        self._check_exclusive(consumer)
        if type(consumer.layer) is not layers.Dense:
            padding = consumer.layer.padding
            if padding != "valid":
                raise _NotFoldable(
                    f"'{consumer.name}' uses padding '{padding}': its zero borders would not "
                    "see the shift"
                )
            if getattr(consumer.layer, "groups", 1) != 1:
                raise _NotFoldable(f"'{consumer.name}' is a grouped convolution")
        edit = self._edit(consumer)
        kernel, bias = math.fold_affine_into_following(
            edit.arrays["kernel"], edit.arrays.get("bias"), scale, shift, input_axis=-2
        )
        edit.arrays["kernel"], edit.arrays["bias"] = kernel, bias
        return consumer


def _flatten_like(
    flatten: layers.Flatten, vector: np.ndarray, shape: tuple, axis: int
) -> np.ndarray:
    """Spread a per-channel vector over ``shape`` and flatten it as ``flatten`` would."""
    dims = list(shape[1:])
    broadcast = [1] * len(dims)
    broadcast[axis - 1] = -1
    full = np.broadcast_to(vector.reshape(broadcast), dims)
    if flatten.data_format == "channels_first" and len(dims) > 1:
        full = np.moveaxis(full, 0, -1)
    return np.ascontiguousarray(full).reshape(-1)
