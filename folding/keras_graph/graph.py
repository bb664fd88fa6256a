"""A Keras Sequential or Functional model as a flat list of calls, and back.

``trace`` walks the model into a :class:`Graph` whose tensors are plain
integer ids, inlining any Sequential or Functional model nested inside it (also
Functional subclasses such as keras-hub's backbones) and tracing *into* every
layer the direct exporter has no writer for (a custom layer whose ``call`` is
built from layers and ``keras.ops``): its ``call`` is run once on symbolic
inputs, and the layers and operations it records take its place, so the
BatchNormalizations inside it are seen and folded. A layer whose ``call`` cannot
be run symbolically stays one call, with the reason in ``Call.opaque``.
``rebuild`` calls the layers again on fresh ``keras.Input`` tensors, letting a
caller swap some layers for replacements and short-circuit others, and
returns a new Functional model whose inputs and outputs are flat lists.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import tree

from folding._compat import (
    functional_of_sequential,
    is_functional,
    nested_layers,
    nested_models_take_any_shape,
    nodes_by_depth,
    symbolic_variable_operators,
)
from folding.errors import FoldingError
from folding.specs import InputSpec


@dataclass(frozen=True)
class Ref:
    """A tensor of the traced graph, by id."""

    id: int


@dataclass(eq=False)
class Call:
    """One call of a layer (or a Keras operation) in the traced graph."""

    layer: Any
    args: Any
    kwargs: dict[str, Any]
    outputs: list[int]
    scope: str = ""
    opaque: str | None = None  # why tracing into this (custom) layer failed, if it did

    @property
    def name(self) -> str:
        return f"{self.scope}{self.layer.name}"

    @property
    def input_ids(self) -> list[int]:
        return [leaf.id for leaf in tree.flatten((self.args, self.kwargs)) if isinstance(leaf, Ref)]

    @property
    def first_input(self) -> int:
        return self.input_ids[0]


@dataclass
class Graph:
    name: str
    inputs: list[InputSpec]
    calls: list[Call]
    outputs: list[int]
    output_names: list[str]
    shapes: dict[int, tuple[int | None, ...]] = field(default_factory=dict)
    output_dtypes: list[str] = field(default_factory=list)
    dtypes: dict[int, str] = field(default_factory=dict)

    _uses: tuple[dict[int, Call], dict[int, list[Call]]] | None = field(
        default=None, repr=False, compare=False
    )

    def _use_lists(self) -> tuple[dict[int, Call], dict[int, list[Call]]]:
        """Producer and consumer maps, built once and dropped when the graph changes."""
        if self._uses is None:
            producers = {out: call for call in self.calls for out in call.outputs}
            users: dict[int, list[Call]] = {}
            for call in self.calls:
                for tensor in dict.fromkeys(call.input_ids):
                    users.setdefault(tensor, []).append(call)
            self._uses = (producers, users)
        return self._uses

    def producers(self) -> dict[int, Call]:
        return self._use_lists()[0]

    def consumers(self) -> dict[int, list[Call]]:
        return self._use_lists()[1]

    def calls_per_layer(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for call in self.calls:
            counts[id(call.layer)] = counts.get(id(call.layer), 0) + 1
        return counts

    def bypass(self, call: Call) -> None:
        """Drop ``call``; whoever read its output reads its first input instead."""
        self.replace_tensor(call.outputs[0], call.first_input)
        self.drop(call)

    def set_args(self, call: Call, args: tuple) -> None:
        """Give ``call`` new positional arguments (other tensors, fewer operands)."""
        call.args = args
        self._uses = None

    def drop(self, call: Call) -> None:
        """Remove ``call``, whose outputs nothing reads any more."""
        self.calls.remove(call)
        self._uses = None

    def replace_tensor(self, old: int, new: int) -> None:
        """Make every reader of tensor ``old`` read ``new`` instead."""

        def swap(leaf: Any) -> Any:
            return Ref(new) if isinstance(leaf, Ref) and leaf.id == old else leaf

        for call in self.consumers().get(old, []):
            call.args = tree.map_structure(swap, call.args)
            call.kwargs = tree.map_structure(swap, call.kwargs)
        self.outputs = [new if out == old else out for out in self.outputs]
        self._uses = None


def is_graph_model(layer: Any) -> bool:
    """Sequential and Functional models (and subclasses of Functional, such as
    keras-hub's ``Backbone``) can be traced; other subclassed models cannot."""
    return isinstance(layer, keras.Sequential) or is_functional(layer)


def output_names(model: keras.Model) -> list[str]:
    if isinstance(model, keras.Sequential):
        names = [model.layers[-1].name]
    else:
        names = list(model.output_names)
    unique: list[str] = []
    for name in names:
        candidate, suffix = name, 1
        while candidate in unique:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        unique.append(candidate)
    return unique


def trace(model: keras.Model) -> Graph:
    if not is_graph_model(model):
        raise FoldingError(
            f"model '{model.name}' is a subclassed {type(model).__name__}; only Sequential "
            "and Functional models can be folded"
        )
    tracer = _Tracer()
    functional = _functional_of(model)
    inputs = []
    for tensor in tree.flatten(functional.inputs):
        tensor_id = tracer.new_tensor(tensor)
        inputs.append(InputSpec(tensor_id, tensor.name, tuple(tensor.shape), str(tensor.dtype)))
    outputs = tracer.inline(model, [spec.id for spec in inputs], scope="")
    graph = Graph(
        name=model.name,
        inputs=inputs,
        calls=tracer.calls,
        outputs=outputs,
        output_names=output_names(model),
        shapes=tracer.shapes,
        dtypes=tracer.dtypes,
        output_dtypes=[str(tensor.dtype) for tensor in tree.flatten(functional.outputs)],
    )
    if tracer.reshaped:
        _refresh_shapes(graph)
    return graph


def _refresh_shapes(graph: Graph) -> None:
    """Every tensor's shape as the layers compute it when called again: a layer traced
    into can turn out to return another shape than its ``compute_output_shape`` told
    Keras (keras-hub's SigLIP embedding counts a class token it does not add), and the
    shapes Keras recorded after it follow that claim."""
    _, tensors = _call_again(graph, lambda call: call.layer)
    for tensor_id, tensor in tensors.items():
        if hasattr(tensor, "shape"):
            graph.shapes[tensor_id] = tuple(tensor.shape)


def _functional_of(model: keras.Model) -> keras.Model:
    if isinstance(model, keras.Sequential):
        functional = functional_of_sequential(model)
        if functional is None:
            raise FoldingError(
                f"Sequential model '{model.name}' is not built: give it an Input or call it once"
            )
        return functional
    return model


class _Tracer:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.shapes: dict[int, tuple[int | None, ...]] = {}
        self.dtypes: dict[int, str] = {}
        self.reshaped = False  # a traced-into layer's outputs differ from Keras' record
        self._next = 0

    def new_tensor(self, tensor: Any) -> int:
        self._next += 1
        self.shapes[self._next] = tuple(tensor.shape)
        self.dtypes[self._next] = str(tensor.dtype)
        return self._next

    def inline(self, model: keras.Model, input_ids: list[int], scope: str) -> list[int]:
        functional = _functional_of(model)
        shapes = [self.shapes[tensor_id] for tensor_id in input_ids]
        if isinstance(model, keras.Sequential) and _other_shapes(functional, shapes):
            functional = _sequential_on(model, shapes[0], self.dtypes[input_ids[0]])
        local: dict[int, int] = {}
        for tensor, tensor_id in zip(tree.flatten(functional.inputs), input_ids, strict=True):
            local[id(tensor)] = tensor_id
        by_depth = nodes_by_depth(functional)
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                operation = node.operation
                if isinstance(operation, keras.layers.InputLayer):
                    continue
                if not all(id(t) in local for t in node.input_tensors):
                    continue  # a node of another model sharing this layer
                self._visit(node, operation, local, scope)
        return [local[id(tensor)] for tensor in tree.flatten(functional.outputs)]

    def _visit(self, node: Any, operation: Any, local: dict[int, int], scope: str) -> None:
        def to_ref(leaf: Any) -> Any:
            if isinstance(leaf, keras.KerasTensor):
                return Ref(local[id(leaf)])
            return leaf

        args = tree.map_structure(to_ref, tuple(node.arguments.args))
        kwargs = tree.map_structure(to_ref, dict(node.arguments.kwargs))
        node_outputs = tree.flatten(node.outputs)
        if is_graph_model(operation):
            flat_in = [leaf.id for leaf in tree.flatten(args) if isinstance(leaf, Ref)]
            inner_out = self.inline(operation, flat_in, scope=f"{scope}{operation.name}_")
            for tensor, tensor_id in zip(node_outputs, inner_out, strict=True):
                local[id(tensor)] = tensor_id
            return
        opaque = None
        if _traced_into(operation):
            try:
                inner = _call_graph(operation, node)
            except Exception as error:  # any failure of a user's call on symbolic tensors
                opaque = _first_line(error)
            else:
                if isinstance(inner, list):  # outputs that do not depend on the inputs
                    for tensor, value in zip(node_outputs, inner, strict=True):
                        constant = TracedConstant(value, name=f"{operation.name}_constant")
                        local[id(tensor)] = self.new_tensor(constant.value)
                        self.calls.append(Call(constant, (), {}, [local[id(tensor)]], scope))
                    return
                flat_in = [
                    leaf.id for leaf in tree.flatten((args, kwargs)) if isinstance(leaf, Ref)
                ]
                inner_out = self.inline(inner, flat_in, scope=f"{scope}{operation.name}_")
                for tensor, tensor_id in zip(node_outputs, inner_out, strict=True):
                    local[id(tensor)] = tensor_id
                    self.reshaped |= tuple(tensor.shape) != self.shapes[tensor_id]
                return
        out_ids = [self.new_tensor(tensor) for tensor in node_outputs]
        for tensor, tensor_id in zip(node_outputs, out_ids, strict=True):
            local[id(tensor)] = tensor_id
        self.calls.append(Call(operation, args, kwargs, out_ids, scope, opaque))


def _other_shapes(functional: keras.Model, shapes: list[tuple]) -> bool:
    """The model is called on tensors of other (non-batch) shapes than it was built on."""
    built = [tuple(tensor.shape) for tensor in tree.flatten(functional.inputs)]
    return len(built) == len(shapes) and any(
        b[1:] != s[1:] for b, s in zip(built, shapes, strict=True)
    )


def _sequential_on(model: keras.Sequential, shape: tuple, dtype: str) -> keras.Model:
    """A Sequential's layers called in turn on an input of ``shape`` (Keras runs a
    Sequential on any shape its layers accept, not just the one it was built on), so the
    traced shapes inside it are the ones it really computes."""
    tensor = keras.Input(batch_shape=shape, dtype=dtype)
    output = tensor
    for layer in model.layers:
        output = layer(output)
    return keras.Model(tensor, output, name=f"{model.name}_on_{'x'.join(map(str, shape[1:]))}")


def _traced_into(operation: Any) -> bool:
    """A layer with sublayers or its own ``call`` that the direct exporter has no
    writer for (keras.ops operations and known layers are written as they are)."""
    from folding.export.layers.base import has_writer

    return isinstance(operation, keras.layers.Layer) and not has_writer(operation)


def _call_graph(layer: keras.layers.Layer, node: Any) -> keras.Model | list[np.ndarray]:
    """``layer.call`` run on fresh symbolic inputs shaped like ``node``'s, as a
    Functional model whose layers and operations are the ones ``call`` used; when no
    output depends on the inputs (only on their shapes), the outputs as arrays."""
    fresh: list[Any] = []

    def symbolic(leaf: Any) -> Any:
        if isinstance(leaf, keras.KerasTensor):
            tensor = keras.Input(batch_shape=leaf.shape, dtype=leaf.dtype)
            fresh.append(tensor)
            return tensor
        return leaf

    args, kwargs = tree.map_structure(
        symbolic, (tuple(node.arguments.args), dict(node.arguments.kwargs))
    )
    if "training" in kwargs and kwargs["training"] is None:
        kwargs["training"] = False
    for name in ("training", "mask"):  # as Layer.__call__ does: passed only where accepted
        if name in kwargs and not _accepts(layer.call, name):
            del kwargs[name]
    with nested_models_take_any_shape(), symbolic_variable_operators():
        outputs = layer.call(*args, **kwargs)
    flat = tree.flatten(outputs)
    unlike = "its call does not return tensors like the layer's outputs"
    if len(flat) != len(tree.flatten(node.outputs)):
        raise FoldingError(unlike)
    if flat and not any(isinstance(t, keras.KerasTensor) for t in flat):
        try:  # computed from the inputs' shapes alone (a position table, say)
            return [keras.ops.convert_to_numpy(t) for t in flat]
        except Exception:  # anything that is not an array
            raise FoldingError(unlike) from None
    if not all(isinstance(t, keras.KerasTensor) for t in flat):
        raise FoldingError("its call returns both symbolic and constant tensors")
    return keras.Model(fresh, flat, name=f"{layer.name}_call")


class TracedConstant(keras.layers.Layer):
    """An output of a traced-into layer that its inputs do not determine (computed from
    their static shapes), as a layer of no inputs returning that array."""

    def __init__(self, value: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = np.asarray(value)

    def call(self) -> Any:
        return keras.ops.convert_to_tensor(self.value)


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read: pass everything
        return True
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _first_line(error: Exception) -> str:
    """The error's type and first line, and where in the layer's own code (the innermost
    frame outside Keras and TensorFlow) it was raised."""
    import traceback

    text = (str(error).strip().splitlines() or [""])[0][:200]
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    import tensorflow

    import folding

    libraries = [
        str(Path(module.__file__).parent) + os.sep for module in (keras, tensorflow, folding)
    ]
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not any(frame.filename.startswith(library) for library in libraries)
    ]
    if not frames:
        return described
    frame = frames[-1]
    where = frame.filename.split("site-packages/")[-1]
    return f"{described}; at {where}:{frame.lineno} `{(frame.line or '').strip()[:80]}`"


def layers_inside(layer: Any) -> list[Any]:
    """Every layer nested in ``layer`` (not ``layer`` itself), depth first."""
    return nested_layers(layer)


LayerFactory = Callable[[Call], Any]


def rebuild(graph: Graph, replace: LayerFactory) -> keras.Model:
    """Call the graph's layers again on new inputs.

    ``replace(call)`` returns the layer object to call (the original, or a
    replacement); it is asked once per distinct layer, so shared layers stay
    shared.
    """
    inputs, tensors = _call_again(graph, replace)
    outputs = [tensors[tensor_id] for tensor_id in graph.outputs]
    return keras.Model(inputs, outputs, name=f"{graph.name}_folded")


def _call_again(graph: Graph, replace: LayerFactory) -> tuple[list[Any], dict[int, Any]]:
    """The graph's layers called on new ``keras.Input`` tensors: the inputs, and every
    tensor by id."""
    tensors: dict[int, Any] = {}
    inputs = []
    for spec in graph.inputs:
        tensor = keras.Input(batch_shape=(None, *spec.shape[1:]), dtype=spec.dtype, name=spec.name)
        tensors[spec.id] = tensor
        inputs.append(tensor)
    chosen: dict[int, Any] = {}

    def resolve(leaf: Any) -> Any:
        return tensors[leaf.id] if isinstance(leaf, Ref) else leaf

    for call in graph.calls:
        if id(call.layer) not in chosen:
            chosen[id(call.layer)] = replace(call)
        layer = chosen[id(call.layer)]
        result = layer(
            *tree.map_structure(resolve, call.args), **tree.map_structure(resolve, call.kwargs)
        )
        for tensor_id, tensor in zip(call.outputs, tree.flatten(result), strict=True):
            tensors[tensor_id] = tensor
    return inputs, tensors
