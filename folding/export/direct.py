"""A traced Keras layer graph written straight to ONNX, layer by layer.

The general exporter (TensorFlow graph -> tf2onnx) is slow on real networks
(its optimiser copies the whole graph per pass) and rewrites what it exports:
it fuses Conv+BatchNormalization while writing the *unfolded* model. This
module writes each known layer as the ONNX operators that compute it, so
``unfolded.onnx`` keeps every BatchNormalization as an ONNX
``BatchNormalization`` node and nothing is fused behind the caller's back.

Layout: Keras is channels-last, ONNX convolutions are channels-first. Each
tensor is kept in whichever layout its producer wrote ("keras" or "cf",
channels-first) and transposed only where a consumer needs the other, so a
chain of convolutions, BatchNormalizations, activations and adds stays
channels-first with no transposes in between.

Layers this module does not know raise :class:`Unsupported`, naming the layer;
given a per-layer ``fallback``, such a layer alone goes through the general
exporter and its graph is spliced in (``folding.export.splice``); otherwise the caller
falls back to the general exporter for the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from folding.errors import ExportError
from folding.export import layers as onnx_layers
from folding.export.splice import LayerExport
from folding.keras_graph.graph import Call, Graph, Ref
from folding.specs import Fraction, no_progress

MIN_OPSET = 17
MAX_OPSET = 21

Weights = Callable[[Call], dict[str, np.ndarray]]


class Unsupported(Exception):
    """A layer (or a setting of one) has no direct ONNX form here."""

    def __init__(self, call: Call, reason: str) -> None:
        super().__init__(f"layer '{call.name}' ({type(call.layer).__name__}): {reason}")
        self.layer = call.name
        self.class_name = type(call.layer).__name__
        self.reason = reason


def keras_weights(call: Call) -> dict[str, np.ndarray]:
    """A layer's own variables by name, as numpy arrays."""
    return {variable.name: np.asarray(variable.numpy()) for variable in call.layer.weights}


@dataclass
class Value:
    """One traced tensor: its ONNX names per layout, its Keras shape."""

    shape: tuple[int | None, ...]
    names: dict[str, str]

    @property
    def rank(self) -> int:
        return len(self.shape)


def to_cf(rank: int) -> list[int]:
    """The permutation taking a channels-last tensor to channels-first."""
    return [0, rank - 1, *range(1, rank - 1)]


def to_keras(rank: int) -> list[int]:
    """The permutation taking a channels-first tensor back to channels-last."""
    return [0, *range(2, rank), 1]


class OnnxWriter:
    """Accumulates nodes and initializers; hands out unique tensor names."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken: set[str] = set()
        self._constants: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        base = hint.replace(":", "_") or "t"
        name, index = base, 1
        while name in self._taken:
            index += 1
            name = f"{base}_{index}"
        self._taken.add(name)
        return name

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def const(self, array: Any, hint: str, dtype: Any = np.float32) -> str:
        array = np.asarray(array, dtype=dtype)
        small = array.size <= 16
        key = (array.dtype.str, array.shape, array.tobytes()) if small else None
        if key is not None and key in self._constants:
            return self._constants[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def ints(self, values: list[int], hint: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: list[str], hint: str, **attributes: Any) -> str:
        output = self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output

    def ops(
        self, op_type: str, inputs: list[str], hint: str, count: int, **attributes: Any
    ) -> list[str]:
        """A node with ``count`` outputs."""
        outputs = [self.fresh(f"{hint}_{index}") for index in range(count)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attributes))
        return outputs

    def reduce(self, op_type: str, x: str, axes: list[int], hint: str, keepdims: int = 1) -> str:
        """Reduce* with ``axes`` as an attribute (opset 17) or an input (18 on)."""
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=axes, keepdims=keepdims)


class Emitter:
    """Writes one traced graph; ``weights(call)`` gives each layer's arrays."""

    def __init__(
        self, graph: Graph, weights: Weights, opset: int, fallback: LayerExport | None = None
    ) -> None:
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ValueError(f"direct export supports opsets {MIN_OPSET}-{MAX_OPSET}, not {opset}")
        self.graph = graph
        self.weights = weights
        self.writer = OnnxWriter(opset)
        self.values: dict[int, Value] = {}
        self.fallback = fallback
        self.spliced: list[Unsupported] = []  # the layers the fallback wrote, and why
        self.extra_opsets: dict[str, int] = {}
        # a channels-first zero Pad's output -> (its input, its pads): a convolution
        # reading it pads itself instead, and the Pad is dropped if nothing else reads it
        self.zero_padded: dict[str, tuple[str, list[int]]] = {}
        # a global pooling's flattened output -> the pooled (N, C, 1, ...) tensor
        self.pooled: dict[str, str] = {}

    # -- tensors ------------------------------------------------------------

    def value(self, tensor: int) -> Value:
        return self.values[tensor]

    def get(self, tensor: int, layout: str) -> str:
        """The tensor's ONNX name in ``layout``, transposing (once) if needed."""
        value = self.values[tensor]
        if layout in value.names:
            return value.names[layout]
        if value.rank < 3:
            return value.names["keras"]
        if layout == "cf":
            name = self.writer.op(
                "Transpose", [value.names["keras"]], "to_cf", perm=to_cf(value.rank)
            )
        else:
            name = self.writer.op(
                "Transpose", [value.names["cf"]], "to_keras", perm=to_keras(value.rank)
            )
        value.names[layout] = name
        return name

    def _input_name(self, tensor: int) -> str | None:
        """The graph input's own name when ``tensor`` is a graph input."""
        return next((spec.name for spec in self.graph.inputs if spec.id == tensor), None)

    def layout_of(self, tensor: int) -> str:
        names = self.values[tensor].names
        return "keras" if "keras" in names else "cf"

    def set(self, call: Call, name: str, layout: str = "keras", index: int = 0) -> None:
        tensor = call.outputs[index]
        shape = self.graph.shapes[tensor]
        if len(shape) < 3:
            layout = "keras"
        self.values[tensor] = Value(shape, {layout: name})

    def alias(self, call: Call, tensor: int) -> None:
        """``call``'s output is ``tensor`` itself (an identity at inference)."""
        source = self.values[tensor]
        self.values[call.outputs[0]] = Value(source.shape, dict(source.names))

    # -- the whole graph ----------------------------------------------------

    def run(
        self,
        name: str,
        output_names: list[str],
        output_dtypes: list[str],
        progress: Fraction = no_progress,
    ) -> onnx.ModelProto:
        graph_inputs = []
        for spec in self.graph.inputs:
            self.writer.reserve(spec.name)
            dtype = np.dtype(spec.dtype)
            shape = [None if i == 0 else d for i, d in enumerate(spec.shape)]
            graph_inputs.append(_value_info(spec.name, dtype, shape, batch=True))
            feed = spec.name
            users = self.graph.consumers().get(spec.id, [])
            ids_only = bool(users) and all(type(u.layer).__name__ == "Embedding" for u in users)
            if dtype != np.float32 and not ids_only:
                # as Keras does: a layer casts its inputs to its compute dtype (float32 here)
                feed = self.writer.op("Cast", [spec.name], "input_f32", to=TensorProto.FLOAT)
            self.values[spec.id] = Value(tuple(spec.shape), {"keras": feed})
        for output in output_names:
            self.writer.reserve(output)
        for done, call in enumerate(self.graph.calls, start=1):
            try:
                onnx_layers.emit(self, call)
            except Unsupported as unsupported:
                if self.fallback is None:
                    raise
                self._splice(call, unsupported)
            progress(done / len(self.graph.calls))
        graph_outputs = []
        input_names = {spec.name for spec in self.graph.inputs}
        for tensor, out_name, dtype in zip(
            self.graph.outputs, output_names, output_dtypes, strict=True
        ):
            source = self.get(tensor, "keras")
            target = np.dtype(dtype)
            if target != np.float32 and source != self._input_name(tensor):
                source = self.writer.op("Cast", [source], "output_cast", to=_onnx_type(target))
            if out_name in input_names:  # a model input returned as an output
                out_name = self.writer.fresh(f"{out_name}_output")
            self.writer.nodes.append(
                helper.make_node("Identity", [source], [out_name], name=f"{out_name}_output")
            )
            shape = self.graph.shapes[tensor]
            graph_outputs.append(_value_info(out_name, target, list(shape), batch=True))
        nodes = _live_nodes(self.writer.nodes, [value.name for value in graph_outputs])
        used = {name for node in nodes for name in node.input}
        initializers = [i for i in self.writer.initializers if i.name in used]
        onnx_graph = helper.make_graph(nodes, name, graph_inputs, graph_outputs, initializers)
        opsets = [helper.make_opsetid("", self.writer.opset)]
        opsets += [helper.make_opsetid(d, v) for d, v in sorted(self.extra_opsets.items())]
        model = helper.make_model(
            onnx_graph,
            opset_imports=opsets,
            producer_name="foldserve",
        )
        model.ir_version = min(model.ir_version, 8 if self.writer.opset <= 17 else 9)
        return model

    def _splice(self, call: Call, unsupported: Unsupported) -> None:
        """``call`` through the per-layer fallback, its graph copied in; when even
        that fails, the direct exporter's own refusal stands, with both reasons."""
        from folding.export.splice import CannotSplice, splice

        assert self.fallback is not None
        try:
            sub = self.fallback(call, self.graph, self.writer.opset)
            tensors = list(dict.fromkeys(call.input_ids))
            inputs = [self.get(tensor, "keras") for tensor in tensors]
            for index, value in enumerate(sub.graph.input[: len(inputs)]):
                wanted = value.type.tensor_type.elem_type
                if wanted != TensorProto.FLOAT:  # an integer input the direct export cast
                    inputs[index] = self.writer.op(
                        "Cast", [inputs[index]], f"{call.name}_input", to=wanted
                    )
            outputs = splice(self.writer, sub, inputs, call.name, self.extra_opsets)
        except (CannotSplice, ExportError) as error:
            raise Unsupported(
                call, f"{unsupported.reason}; exporting it alone failed too: {error}"
            ) from None
        if len(outputs) != len(call.outputs):
            raise Unsupported(call, f"{unsupported.reason}; its export alone has other outputs")
        for index, name in enumerate(outputs):
            self.set(call, name, index=index)
        self.spliced.append(unsupported)


def _live_nodes(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes some graph output depends on, in their order (a Pad a convolution
    absorbed, a layout transpose nobody read, are dropped)."""
    needed = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(name in needed for name in node.output):
            live.append(node)
            needed.update(node.input)
    return live[::-1]


def _onnx_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value_info(name: str, dtype: np.dtype, shape: list, batch: bool) -> onnx.ValueInfoProto:
    dims: list[Any] = [None if d is None else int(d) for d in shape]
    if batch and dims:
        dims[0] = "batch"
    dims = [f"{name}_dim{i}" if d is None else d for i, d in enumerate(dims)]
    return helper.make_tensor_value_info(name, _onnx_type(dtype), dims)


def emit_graph(
    graph: Graph,
    *,
    opset: int,
    output_dtypes: list[str],
    weights: Weights = keras_weights,
    name: str = "model",
    fallback: LayerExport | None = None,
    spliced: list[Unsupported] | None = None,
    progress: Fraction = no_progress,
) -> onnx.ModelProto:
    """``graph`` as an ONNX model whose inputs and outputs carry the graph's names.

    A layer with no direct form goes through ``fallback`` alone (its graph
    spliced in; ``spliced`` collects each such layer and why) or, without one,
    raises :class:`Unsupported`. ``progress(fraction)`` hears of the layer calls
    written so far over all of them.
    """
    emitter = Emitter(graph, weights, opset, fallback)
    model = emitter.run(name, list(graph.output_names), output_dtypes, progress)
    if spliced is not None:
        spliced.extend(emitter.spliced)
    return model


def refs(structure: Any) -> list[int]:
    """The tensor ids in a call argument structure, in order."""
    from keras import tree

    return [leaf.id for leaf in tree.flatten(structure) if isinstance(leaf, Ref)]
