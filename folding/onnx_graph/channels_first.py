"""Pre-pass: undo the layout shuffles of channels-last exporters (tf2onnx), so that
each per-channel affine sits right beside its Conv:

* two Transposes in a row that cancel out are dropped
  (``Conv -> T(NCHW->NHWC) -> T(NHWC->NCHW) -> BatchNormalization``);
* a per-channel Mul/Add/Sub on the last axis, after a Transpose that moves the
  channel axis 1 last, moves before it (its constant reshaped to ``[C, 1, ...]``):
  ``Conv -> T -> Add -> Mul`` becomes ``Conv -> Add -> Mul -> T``;
* one on the last axis right before a Transpose that moves the last axis to 1
  moves after it: ``Mul -> Add -> T -> Conv`` (a Keras BN in front of a
  convolution) becomes ``T -> Mul -> Add -> Conv``.

Both are exact. Each Transpose is visited once, and again only when a change
right beside it may let it move or cancel.
"""

from __future__ import annotations

import onnx

from folding.onnx_graph.affine import channel_vector
from folding.onnx_graph.graph import OnnxGraph, attribute


def channels_first(graph: OnnxGraph) -> None:
    pending = [node for node in graph.nodes() if node.op_type == "Transpose"]
    pending.reverse()
    while pending:
        node = pending.pop()
        if not graph.contains(node):
            continue
        changed = (
            _cancel(graph, node, pending) or _move_after(graph, node) or _move_before(graph, node)
        )
        if changed and graph.contains(node):
            pending.append(node)


def _perm(node: onnx.NodeProto) -> list[int]:
    return list(attribute(node, "perm", []))


def _sole_user(graph: OnnxGraph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    tensor = node.output[0]
    users = graph.users(tensor)
    if tensor in graph.outputs or len(users) != 1 or graph.read_in_subgraph(tensor):
        return None
    return users[0]


def _cancel(graph: OnnxGraph, node: onnx.NodeProto, pending: list) -> bool:
    """``T(perm) -> T(inverse)``: both go, their readers read the first one's input."""
    perm = _perm(node)
    user = _sole_user(graph, node)
    if len(perm) < 3 or user is None or user.op_type != "Transpose":
        return False
    second = _perm(user)
    if len(second) != len(perm) or [perm[i] for i in second] != list(range(len(perm))):
        return False
    if user.output[0] in graph.outputs or graph.read_in_subgraph(user.output[0]):
        return False
    source = node.input[0]
    graph.remove(user)
    graph.remove(node)
    for reader in graph.users(user.output[0]):
        for index, name in enumerate(reader.input):
            if name == user.output[0]:
                graph.set_input(reader, index, source)
    producer = graph.producer(source)
    if producer is not None and producer.op_type == "Transpose":
        pending.append(producer)
    return True


def _move_after(graph: OnnxGraph, node: onnx.NodeProto) -> bool:
    """``T (channels last) -> Mul/Add/Sub(last axis)`` becomes ``Mul/Add/Sub -> T``."""
    perm = _perm(node)
    user = _sole_user(graph, node)
    if len(perm) < 3 or perm[-1] != 1 or user is None:
        return False
    if user.op_type not in ("Mul", "Add", "Sub") or len(user.input) != 2:
        return False
    if user.input[0] != node.output[0] or user.input[1] == node.output[0]:
        return False
    operand = graph.constant(user.input[1])
    if operand is None or operand.dtype.kind != "f":
        return False
    vector, axis = channel_vector(operand)
    if vector is None or axis != 0 or operand.ndim > len(perm):
        return False
    result = user.output[0]
    moved = graph.fresh_name(f"{result}_channels_first")
    graph.set_constant(user, 1, vector.reshape(-1, *[1] * (len(perm) - 2)))
    graph.rename_output(user, 0, moved)
    graph.set_input(user, 0, node.input[0])
    graph.rename_output(node, 0, result)
    graph.set_input(node, 0, moved)
    return True


def _move_before(graph: OnnxGraph, node: onnx.NodeProto) -> bool:
    """``Mul/Add/Sub(last axis) -> T (last axis to 1)`` becomes ``T -> Mul/Add/Sub``."""
    perm = _perm(node)
    producer = graph.producer(node.input[0])
    if len(perm) < 3 or perm[1] != len(perm) - 1 or producer is None:
        return False
    if producer.op_type not in ("Mul", "Add", "Sub") or len(producer.input) != 2:
        return False
    if _sole_user(graph, producer) is not node:
        return False
    constants = [graph.constant(name) for name in producer.input]
    if sum(value is None for value in constants) != 1:
        return False
    index = 0 if constants[0] is not None else 1
    operand = constants[index]
    if operand.dtype.kind != "f":
        return False
    vector, axis = channel_vector(operand)
    if vector is None or axis != 0 or operand.ndim > len(perm):
        return False
    variable = producer.input[1 - index]
    result = node.output[0]
    moved = graph.fresh_name(f"{result}_before_{producer.op_type.lower()}")
    graph.set_constant(producer, index, vector.reshape(-1, *[1] * (len(perm) - 2)))
    graph.rename_output(node, 0, moved)
    graph.set_input(node, 0, variable)
    graph.rename_output(producer, 0, result)
    graph.set_input(producer, 1 - index, moved)
    return True
