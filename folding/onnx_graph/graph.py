"""An ONNX graph that keeps its own use lists, so that every query is a lookup.

Like ``torch.fx``'s ``node.users``: each tensor name maps to the node that produces
it and to the nodes that read it (a node with an ``If`` / ``Loop`` / ``Scan`` body
also reads the outer names its body reads). Rules change the graph only through
the methods here, which keep both maps true; ``commit`` writes the nodes back in
a topological order, leaving out every node no graph output needs and every
initializer nothing reads.

Constants are initializers, ``Constant`` nodes and the pure expressions of them
(``Identity``, ``Cast``, ``Transpose``, ``Reshape``, arithmetic, ...; see
``folding.onnx_graph.constants``), evaluated once, when a rule asks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from folding.onnx_graph.constants import PURE_OPS, cast_like, constant_node_value, evaluate
from folding.report import article  # noqa: F401 - the rules import it from here

SHAPE_READERS = ("Shape", "Size")


class NotFoldable(Exception):
    """Why one BN-like node stays: the message is the report's reason."""


def attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for entry in node.attribute:
        if entry.name == name:
            return onnx.helper.get_attribute_value(entry)
    return default


def node_key(node: onnx.NodeProto) -> str:
    """How reports name a node: its name, else its first output."""
    return node.name or node.output[0]


class OnnxGraph:
    """The nodes of ``model.graph`` (edited in place by ``commit``) with use lists.
    ``original``: an unedited copy of ``model``, which shape inference reads."""

    def __init__(self, model: onnx.ModelProto, original: onnx.ModelProto | None = None) -> None:
        self.model = model
        self._original = original if original is not None else model
        self.proto = model.graph
        self.outputs = {value.name for value in self.proto.output}
        self.inputs = {value.name for value in self.proto.input}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self._initializers = {tensor.name: tensor for tensor in self.proto.initializer}
        self._original_initializers = set(self._initializers)
        self._arrays: dict[str, np.ndarray | None] = {}
        self._nodes: dict[int, onnx.NodeProto] = {}
        self._order: dict[int, tuple[int, int]] = {}
        self._implicit: dict[int, set[str]] = {}
        self._producers: dict[str, onnx.NodeProto] = {}
        self._users: dict[str, list[onnx.NodeProto]] = {}
        self._names = set(self._initializers) | self.inputs | self.outputs
        self._inserted = 0
        self._shapes: dict[str, list[int | None]] | None = None
        for index, node in enumerate(self.proto.node):
            self._add(node, (index, 0))

    # -- queries ------------------------------------------------------------------

    def nodes(self) -> list[onnx.NodeProto]:
        """The live nodes, in graph order (a snapshot: safe to edit while iterating)."""
        return sorted(self._nodes.values(), key=lambda node: self._order[id(node)])

    def contains(self, node: onnx.NodeProto) -> bool:
        return id(node) in self._nodes

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return self._producers.get(tensor)

    def users(self, tensor: str) -> list[onnx.NodeProto]:
        return list(self._users.get(tensor, ()))

    def read_in_subgraph(self, tensor: str) -> bool:
        return any(tensor in self._implicit.get(id(n), ()) for n in self._users.get(tensor, ()))

    def sole_user(self, tensor: str, what: str) -> onnx.NodeProto:
        """The one node reading ``tensor``'s values; NotFoldable when it is a graph output
        or feeds several nodes (folding would change what the others see). A ``Shape`` /
        ``Size`` reads only the shape, which a fold keeps (``x.reshape_as(y)``, written by
        the TorchScript exporter as ``Reshape(x, Shape(y))``), and ``CastLike(c, x)``
        only the element type (the dynamo exporter's constants cast to a tensor's dtype)."""
        if tensor in self.outputs:
            raise NotFoldable(f"{what} is also a graph output")
        users = [
            user
            for user in self._users.get(tensor, [])
            if not _reads_only_type(user, tensor) or id(user) in self._implicit
        ]
        if len(users) != 1:
            raise NotFoldable(f"{what} feeds {len(users)} nodes")
        return users[0]

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of ``tensor`` when it is a constant (see the module docstring)."""
        if not tensor:
            return None
        pending = [tensor]
        while pending:  # iterative: constant chains can be longer than Python's stack
            name = pending[-1]
            if name in self._arrays:
                pending.pop()
                continue
            if name in self._initializers:
                self._arrays[name] = numpy_helper.to_array(self._initializers[name])
                pending.pop()
                continue
            node = self._producers.get(name)
            if node is None or node.op_type not in PURE_OPS or id(node) in self._implicit:
                self._arrays[name] = None
                pending.pop()
                continue
            missing = [i for i in node.input if i and i not in self._arrays]
            if missing:
                pending.extend(missing)
                continue
            pending.pop()
            values = [self._arrays[i] if i else None for i in node.input]
            if node.op_type == "Constant":
                result = constant_node_value(node)
            elif node.op_type == "CastLike" and values[0] is not None and values[1] is None:
                elem_type = self.elem_type(node.input[1])
                result = None if elem_type is None else cast_like(values[0], elem_type)
            elif any(v is None for v, i in zip(values, node.input, strict=True) if i):
                result = None
            else:
                result = evaluate(node, values, self.opset)
            for output in node.output:
                self._arrays[output] = result if output == node.output[0] else None
        return self._arrays[tensor]

    def elem_type(self, tensor: str) -> int | None:
        """The ONNX element type the graph declares for ``tensor`` (an input, output or
        value_info entry), or None."""
        for value in [*self.proto.input, *self.proto.value_info, *self.proto.output]:
            if value.name == tensor and value.type.tensor_type.elem_type:
                return value.type.tensor_type.elem_type
        return None

    def optional_constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Input ``index`` of ``node`` (a bias): None when absent, NotFoldable when it is
        computed at run time (treating it as absent would fold wrongly)."""
        if len(node.input) <= index or not node.input[index]:
            return None
        value = self.constant(node.input[index])
        if value is None:
            raise NotFoldable(
                f"the {what} of '{node_key(node)}' ('{node.input[index]}') is computed at "
                "run time, not a constant"
            )
        return value

    def shape(self, tensor: str) -> list[int | None] | None:
        """The shape ONNX shape inference gives ``tensor`` (None: unknown; a dimension
        None: symbolic). Inference runs once, when first asked."""
        if self._shapes is None:
            self._shapes = {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self._original)
            except Exception:  # inference refuses some models ORT runs: no shapes then
                inferred = None
            if inferred is not None:
                graph = inferred.graph
                for value in [*graph.value_info, *graph.input, *graph.output]:
                    tensor_type = value.type.tensor_type
                    if tensor_type.HasField("shape"):
                        self._shapes[value.name] = [
                            d.dim_value if d.HasField("dim_value") else None
                            for d in tensor_type.shape.dim
                        ]
        return self._shapes.get(tensor)

    def rank(self, tensor: str) -> int | None:
        shape = self.shape(tensor)
        return None if shape is None else len(shape)

    # -- edits ----------------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        name = base
        while name in self._names:
            name += "_"
        self._names.add(name)
        return name

    def set_input(self, node: onnx.NodeProto, index: int, tensor: str) -> None:
        while len(node.input) <= index:
            node.input.append("")
        old = node.input[index]
        node.input[index] = tensor
        if old and old not in node.input and old not in self._implicit.get(id(node), ()):
            self._users[old] = [u for u in self._users[old] if u is not node]
        if tensor and all(u is not node for u in self._users.get(tensor, ())):
            self._users.setdefault(tensor, []).append(node)

    def set_constant(self, node: onnx.NodeProto, index: int, array: np.ndarray) -> None:
        """Give ``node`` a fresh initializer as input ``index`` (a shared one is never
        edited: other nodes may read it)."""
        name = self.fresh_name(f"{node_key(node)}_folded_{index}")
        self._initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        self._arrays[name] = np.asarray(array)
        self.set_input(node, index, name)

    def rename_output(self, node: onnx.NodeProto, index: int, tensor: str) -> None:
        """``node`` now writes ``tensor`` (which nothing else produces)."""
        old = node.output[index]
        del self._producers[old]
        node.output[index] = tensor
        self._producers[tensor] = node
        self._names.add(tensor)

    def replace_all_uses_with(self, old: str, new: str) -> None:
        """Every node reading ``old`` reads ``new`` instead."""
        if self.read_in_subgraph(old):
            raise NotFoldable(f"'{old}' is read inside a subgraph")
        for user in self.users(old):
            for index, name in enumerate(user.input):
                if name == old:
                    self.set_input(user, index, new)

    def insert_after(self, anchor: onnx.NodeProto, node: onnx.NodeProto) -> None:
        self._inserted += 1
        self._add(node, (self._order[id(anchor)][0], self._inserted))

    def remove(self, node: onnx.NodeProto) -> None:
        del self._nodes[id(node)]
        for name in set(node.input) | self._implicit.pop(id(node), set()):
            if name:
                self._users[name] = [u for u in self._users[name] if u is not node]
        for name in node.output:
            if self._producers.get(name) is node:
                del self._producers[name]

    def bypass(self, node: onnx.NodeProto, source: str) -> None:
        """Remove a node whose output now equals its input ``source`` (a folded BN):
        ``source`` takes over the output's name when nothing else reads it, else the
        output's readers read ``source``."""
        result = node.output[0]
        producer = self.producer(source)
        alone = source not in self.outputs and len(self._users.get(source, [])) == 1
        self.remove(node)
        if producer is not None and alone:
            self.rename_output(producer, list(producer.output).index(source), result)
        else:
            self.replace_all_uses_with(result, source)

    def append_after(self, tensor: str, op_type: str, operand: np.ndarray, name: str) -> None:
        """``tensor`` becomes ``op_type(tensor, operand)``: its producer writes a new
        name, read by a new node that writes ``tensor``."""
        producer = self._producers[tensor]
        moved = self.fresh_name(f"{tensor}_before_{op_type.lower()}")
        self.rename_output(producer, list(producer.output).index(tensor), moved)
        node = onnx.helper.make_node(op_type, [moved, ""], [tensor], name=self.fresh_name(name))
        self.insert_after(producer, node)
        self.set_constant(node, 1, operand)

    def commit(self) -> None:
        """Write the live nodes back into the model in topological order, with the
        initializers they read; drop value_info of tensors that are gone."""
        live = self._live()
        order = _topological([n for n in self.nodes() if id(n) in live], self._producers)
        read: set[str] = set()
        for node in order:
            read.update(node.input)
            read |= self._implicit.get(id(node), set())
        read |= self.outputs | self.inputs
        kept = [t for t in self.proto.initializer if t.name in read]
        added = [
            tensor
            for name, tensor in self._initializers.items()
            if name in read and name not in self._original_initializers
        ]
        del self.proto.initializer[:]
        self.proto.initializer.extend([*kept, *added])
        del self.proto.node[:]
        self.proto.node.extend(order)
        tensors = read | {name for node in order for name in node.output}
        infos = [value for value in self.proto.value_info if value.name in tensors]
        if len(infos) != len(self.proto.value_info):
            del self.proto.value_info[:]
            self.proto.value_info.extend(infos)

    # -- bookkeeping ------------------------------------------------------------------

    def _add(self, node: onnx.NodeProto, order: tuple[int, int]) -> None:
        self._nodes[id(node)] = node
        self._order[id(node)] = order
        implicit = _outer_names_read(node)
        if implicit:
            self._implicit[id(node)] = implicit
        for name in set(node.input) | implicit:
            if name:
                self._users.setdefault(name, []).append(node)
        for name in node.output:
            if name:
                self._producers[name] = node
                self._names.add(name)

    def _live(self) -> set[int]:
        """The ids of the nodes some graph output depends on."""
        live: set[int] = set()
        pending = [self._producers[name] for name in self.outputs if name in self._producers]
        while pending:
            node = pending.pop()
            if id(node) in live:
                continue
            live.add(id(node))
            for name in set(node.input) | self._implicit.get(id(node), set()):
                producer = self._producers.get(name)
                if producer is not None and id(producer) not in live:
                    pending.append(producer)
        return live


def _reads_only_type(user: onnx.NodeProto, tensor: str) -> bool:
    """``user`` reads ``tensor``'s shape or element type, never its values."""
    if user.op_type in SHAPE_READERS:
        return True
    return (
        user.op_type == "CastLike"
        and list(user.input).index(tensor) == 1
        and (user.input[0] != tensor)
    )


def _topological(
    nodes: list[onnx.NodeProto], producers: dict[str, onnx.NodeProto]
) -> list[onnx.NodeProto]:
    """``nodes`` reordered so that each comes after its producers; otherwise in the
    given order. Iterative (graphs are deeper than Python's stack)."""
    wanted = {id(node) for node in nodes}
    done: set[int] = set()
    order: list[onnx.NodeProto] = []
    for root in nodes:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in done:
                continue
            if expanded:
                done.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            for name in reversed(list(node.input) + sorted(_outer_names_read(node))):
                producer = producers.get(name)
                if producer is not None and id(producer) in wanted and id(producer) not in done:
                    stack.append((producer, False))
    return order


def _outer_names_read(node: onnx.NodeProto) -> set[str]:
    """The names a node's subgraphs (If, Loop, Scan bodies) read from outside them."""
    names: set[str] = set()
    for entry in node.attribute:
        graphs = [entry.g] if entry.HasField("g") else list(entry.graphs)
        for graph in graphs:
            defined = {value.name for value in graph.input}
            defined |= {tensor.name for tensor in graph.initializer}
            read: set[str] = {value.name for value in graph.output}
            for inner in graph.node:
                defined.update(inner.output)
                read.update(name for name in inner.input if name)
                read |= _outer_names_read(inner)
            names |= read - defined
    return names
