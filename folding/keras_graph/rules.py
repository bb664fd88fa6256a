"""Where one BatchNormalization folds: backward into the layer before it, forward into
the layer after it, or nowhere, with the reason (the rules are listed in
``folding.keras_graph.fold``). ``BatchNormFolder`` applies them to every
BatchNormalization of a traced graph until none more folds, and collects the new
weight arrays and the report's entries."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from folding import math
from folding.diagnostics import diagnose
from folding.keras_graph.batch_norm import batch_norm_params, batch_norm_stats
from folding.keras_graph.graph import Call, Graph
from folding.keras_graph.parallel import NotBeside, fold_into_sibling, is_sum
from folding.keras_graph.through_sum import fold_through_concat, fold_through_sum
from folding.report import FoldedEntry, NotFoldedEntry, article
from folding.specs import Fraction, no_progress


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


class NotFoldable(Exception):
    """Why one direction of folding is not possible, in words."""


@dataclass
class _Edit:
    """New weight arrays for one layer that absorbs one or more BatchNormalizations."""

    call: Call
    arrays: dict[str, np.ndarray]


def _is_batch_norm(call: Call) -> bool:
    return type(call.layer) is layers.BatchNormalization


def _channel_axis(layer: keras.layers.Layer, rank: int) -> int:
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1


class BatchNormFolder:
    """``progress(fraction)`` hears of the BatchNormalizations tried at least once over
    all of them, after each one."""

    def __init__(
        self,
        graph: Graph,
        observed_variance: dict[str, np.ndarray],
        progress: Fraction = no_progress,
    ) -> None:
        self.graph = graph
        self.observed_variance = observed_variance
        self.progress = progress
        self.folded: list[FoldedEntry] = []
        self.not_folded: list[NotFoldedEntry] = []
        self.edits: dict[int, _Edit] = {}

    def run(self) -> None:
        reasons: dict[int, tuple[Call, str]] = {}
        total = sum(1 for c in self.graph.calls if _is_batch_norm(c))
        tried: set[int] = set()
        changed = True
        while changed:
            changed = False
            for call in [c for c in self.graph.calls if _is_batch_norm(c)]:
                try:
                    self._fold(call)
                except NotFoldable as reason:
                    reasons[id(call)] = (call, str(reason))
                else:
                    reasons.pop(id(call), None)
                    changed = True
                tried.add(id(call))
                self.progress(len(tried) / total)
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
            raise NotFoldable("called with training=True: it normalises with batch statistics")
        rank = len(self.graph.shapes[bn.first_input])
        axis = bn.layer.axis
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise NotFoldable(f"normalises over several axes {list(axis)}")
            axis = axis[0]
        axis %= rank
        params = batch_norm_params(bn.layer)
        try:
            targets = self._fold_backward(bn, axis, rank, params)
            direction = "backward"
        except NotFoldable as backward:
            try:
                targets = [self._fold_forward(bn, axis, params)]
                direction = "forward"
            except NotFoldable as forward:
                message = f"cannot fold backward ({backward}) nor forward ({forward})"
                try:
                    targets = [fold_into_sibling(self, bn, axis, params)]
                    direction = "parallel"
                except NotBeside:
                    raise NotFoldable(message) from None
                except NotFoldable as beside:
                    raise NotFoldable(
                        f"{message}, nor into a convolution beside it ({beside})"
                    ) from None
        if direction != "parallel":  # the parallel fold took the BN out of its sum itself
            self.graph.bypass(bn)
        folded_arrays = [
            array for target in targets for array in self.edits[id(target.layer)].arrays.values()
        ]
        diagnostics = diagnose(params, folded_arrays, self.observed_variance.get(bn.name))
        classes = dict.fromkeys(type(target.layer).__name__ for target in targets)
        self.folded.append(
            FoldedEntry(
                bn.name,
                ", ".join(target.name for target in targets),  # a sum's operands, each
                ", ".join(classes),
                direction,
                batch_norm_stats(params),
                diagnostics,
            )
        )

    def _sole_consumer(self, tensor: int, what: str) -> Call:
        users = self.graph.consumers().get(tensor, [])
        if tensor in self.graph.outputs:
            raise NotFoldable(f"{what} is also a model output")
        if len(users) != 1:
            names = ", ".join(f"'{u.name}'" for u in users)
            raise NotFoldable(f"{what} feeds {len(users)} layers ({names})")
        return users[0]

    def _check_exclusive(self, call: Call) -> None:
        layer = call.layer
        if self.graph.calls_per_layer()[id(layer)] > 1:
            raise NotFoldable(f"'{call.name}' is shared by several calls")
        if getattr(layer, "lora_enabled", False):
            raise NotFoldable(f"'{call.name}' has LoRA enabled")
        if getattr(layer, "quantization_mode", None):
            raise NotFoldable(f"'{call.name}' is quantized")
        if not layer.built:
            raise NotFoldable(f"'{call.name}' is not built")

    def _edit(self, call: Call) -> _Edit:
        if id(call.layer) not in self.edits:
            arrays = {v.name: np.asarray(v.numpy()) for v in call.layer.weights}
            self.edits[id(call.layer)] = _Edit(call, arrays)
        return self.edits[id(call.layer)]

    def _fold_backward(
        self, bn: Call, axis: int, rank: int, params: math.BatchNormParams
    ) -> list[Call]:
        producer = self.graph.producers().get(bn.first_input)
        if producer is None:
            raise NotFoldable("its input is a model input")
        joins = {"Add": fold_through_sum, "Concatenate": fold_through_concat}
        through = joins.get(type(producer.layer).__name__)
        if through is not None and (through is fold_through_concat or is_sum(producer)):
            try:
                return through(self, bn, producer, axis, params)
            except NotFoldable as reason:
                raise NotFoldable(
                    f"'{producer.name}' is {article(type(producer.layer).__name__)}, which has "
                    f"no weights to fold into, and its operands cannot take it ({reason})"
                ) from None
        self._check_backward(producer, bn.first_input, axis, rank)
        self._fold_into(producer, params)
        return [producer]

    def _check_backward(self, producer: Call, tensor: int, axis: int, rank: int) -> None:
        """``params`` of a BN reading ``tensor`` can fold into ``producer``, which makes it."""
        kind = _BACKWARD_KINDS.get(type(producer.layer))
        if kind is None:
            raise NotFoldable(
                f"'{producer.name}' is {article(type(producer.layer).__name__)}, which has no "
                "weights to fold into"
            )
        if getattr(producer.layer, "activation", None) is not keras.activations.linear:
            activation = getattr(producer.layer.activation, "__name__", "custom")
            raise NotFoldable(f"'{producer.name}' applies activation '{activation}' first")
        self._sole_consumer(tensor, f"the output of '{producer.name}'")
        self._check_exclusive(producer)
        channel_axis = _channel_axis(producer.layer, rank)
        if axis != channel_axis:
            raise NotFoldable(
                f"it normalises axis {axis}, not the channel axis {channel_axis} of "
                f"'{producer.name}'"
            )

    def _fold_into(self, producer: Call, params: math.BatchNormParams) -> None:
        """``params`` folded into the layer before (checked by ``_check_backward``)."""
        kind = _BACKWARD_KINDS[type(producer.layer)]
        edit = self._edit(producer)
        kernel, bias = edit.arrays[kind.kernel], edit.arrays.get("bias")
        if kind.depthwise:
            kernel, bias = math.fold_into_preceding_depthwise(kernel, bias, params)
        else:
            kernel, bias = math.fold_into_preceding(kernel, bias, params, kind.output_axis)
        edit.arrays[kind.kernel], edit.arrays["bias"] = kernel, bias

    def _fold_forward(self, bn: Call, axis: int, params: math.BatchNormParams) -> Call:
        output = bn.outputs[0]
        consumer = self._sole_consumer(output, "its output")
        scale, shift = params.scale(), params.shift()
        shape = self.graph.shapes[output]
        if type(consumer.layer) is layers.Flatten:
            if any(dim is None for dim in shape[1:]):
                raise NotFoldable(f"the Flatten '{consumer.name}' sees a dynamic shape {shape}")
            scale = _flatten_like(consumer.layer, scale, shape, axis)
            shift = _flatten_like(consumer.layer, shift, shape, axis)
            flatten = consumer
            consumer = self._sole_consumer(flatten.outputs[0], f"the output of '{flatten.name}'")
            if type(consumer.layer) is not layers.Dense:
                raise NotFoldable(
                    f"'{flatten.name}' feeds {article(type(consumer.layer).__name__)}, not a Dense"
                )
        elif type(consumer.layer) not in _FORWARD_KINDS:
            raise NotFoldable(
                f"it feeds '{consumer.name}', {article(type(consumer.layer).__name__)}, which "
                "has no weights to fold into"
            )
        elif axis != _channel_axis(consumer.layer, len(shape)):
            raise NotFoldable(
                f"it normalises axis {axis}, not the input channel axis of '{consumer.name}'"
            )
        self._check_exclusive(consumer)
        if type(consumer.layer) is not layers.Dense:
            padding = consumer.layer.padding
            if padding != "valid":
                raise NotFoldable(
                    f"'{consumer.name}' uses padding '{padding}': its zero borders would not "
                    "see the shift"
                )
            if getattr(consumer.layer, "groups", 1) != 1:
                raise NotFoldable(f"'{consumer.name}' is a grouped convolution")
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
