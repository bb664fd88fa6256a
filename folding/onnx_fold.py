"""BatchNormalization folded at the ONNX graph level, for models with no Keras layers.

An ONNX file (PyTorch's exporter, tf2onnx, ...) carries each BatchNormalization
as an ONNX ``BatchNormalization`` node, or as the ``Mul`` / ``Add`` / ``Sub``
with constant per-channel operands that an exporter turned it into. Each is an
affine map ``y = x * scale + shift`` per channel, merged here into:

* **backward**, the node that produces its input: ``Conv`` (grouped and
  depthwise too: weight ``[out, in/group, *k]``), ``ConvTranspose`` (weight
  ``[in, out/group, *k]``: output channel ``g * out/group + j`` is
  ``weight[g-th block of inputs, j]``), ``Gemm`` (either ``transB``), ``MatMul``
  with a constant weight (an ``Add`` carries the shift);
* **forward**, the node that consumes its output, where that is exact: ``Gemm`` /
  ``MatMul`` (the shift through the weight becomes a bias), a ``Conv`` with no
  padding and one group.

Only when the tensor in between feeds nothing else and is no graph output, and
only when the weights are constants (initializers). What stays, stays with a
reason, as for Keras models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from folding import math
from folding.diagnostics import diagnose
from folding.report import (
    BatchNormStats,
    FoldedEntry,
    NotFoldedEntry,
)


class _NotFoldable(Exception):
    pass


@dataclass
class Affine:
    """One per-channel affine node: ``y = x * scale + shift`` on ``axis``."""

    node: onnx.NodeProto
    scale: np.ndarray
    shift: np.ndarray
    axis_from_end: int | None  # None: channel axis 1; 0: the last axis
    params: math.BatchNormParams


@dataclass
class OnnxFoldResult:
    model: onnx.ModelProto
    folded: list[FoldedEntry] = field(default_factory=list)
    not_folded: list[NotFoldedEntry] = field(default_factory=list)


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {value.name for value in self.graph.output}

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return next((n for n in self.graph.node if tensor in n.output), None)

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if tensor in n.input]

    def sole_consumer(self, tensor: str, what: str) -> onnx.NodeProto:
        if tensor in self.outputs:
            raise _NotFoldable(f"{what} is also a graph output")
        users = self.consumers(tensor)
        if len(users) != 1:
            raise _NotFoldable(f"{what} feeds {len(users)} nodes")
        return users[0]

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def set_constant(self, node: onnx.NodeProto, index: int, array: np.ndarray) -> None:
        """Give ``node`` a fresh initializer as input ``index`` (never edit a shared one)."""
        name = f"{node.name or node.output[0]}_folded_{index}"
        while name in self.constants:
            name += "_"
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self.constants[name] = array
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _affine_of(graph: _Graph, node: onnx.NodeProto) -> Affine | None:
    """The node as a per-channel affine map, if it is one."""
    if node.op_type == "BatchNormalization":
        if _attribute(node, "training_mode", 0) or (len(node.output) > 1 and node.output[1]):
            return None
        arrays = [graph.constant(name) for name in node.input[1:5]]
        if any(a is None for a in arrays):
            return None
        gamma, beta, mean, variance = (np.asarray(a, np.float64) for a in arrays)
        params = math.BatchNormParams(
            mean, variance, gamma, beta, float(_attribute(node, "epsilon", 1e-5))
        )
        return Affine(node, params.scale(), params.shift(), None, params)
    if node.op_type not in ("Mul", "Add", "Sub") or len(node.input) != 2:
        return None
    operand = graph.constant(node.input[1])
    if operand is None or operand.dtype.kind != "f":
        return None
    vector, axis = _channel_vector(operand)
    if vector is None:
        return None
    vector = vector.astype(np.float64)
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    scale, shift = {"Mul": (vector, zeros), "Add": (ones, vector), "Sub": (ones, -vector)}[
        node.op_type
    ]
    params = math.BatchNormParams(zeros, ones, scale, shift, 0.0)  # the same map, as a BN
    return Affine(node, scale, shift, axis, params)


def _channel_vector(operand: np.ndarray) -> tuple[np.ndarray | None, int | None]:
    """A constant that broadcasts per channel: ``[C]``/``[1, C]`` (last axis, 0) or
    ``[C, 1, ...]``/``[1, C, 1, ...]`` (axis 1, None)."""
    shape = list(operand.shape)
    if not shape or int(np.prod(shape)) <= 1:
        return None, None
    squeezed = [d for d in shape if d != 1]
    if len(squeezed) != 1:
        return None, None
    if shape[-1] != 1:
        return operand.reshape(-1), 0
    while shape and shape[0] == 1 and len(shape) > 2:
        shape = shape[1:]
    if shape[0] != 1 and all(d == 1 for d in shape[1:]):
        return operand.reshape(-1), None
    if len(shape) >= 2 and shape[0] == 1 and shape[1] != 1 and all(d == 1 for d in shape[2:]):
        return operand.reshape(-1), None
    return None, None


@dataclass
class _Pair:
    """A BN an exporter decomposed: a per-channel ``Mul`` (its scale) feeding only a
    per-channel ``Add``/``Sub`` (its shift) on the same axis. Reported as one BN."""

    scale: Affine
    shift: Affine

    @property
    def keys(self) -> tuple[str, str]:
        return _key(self.scale.node), _key(self.shift.node)


def _key(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def fold_onnx(model: onnx.ModelProto) -> OnnxFoldResult:
    """Fold every foldable BN-like node of ``model`` (a copy is changed and returned).

    Reported are the ``BatchNormalization`` nodes and the Mul + Add/Sub pairs exporters
    decompose BNs into (folded or kept, each once), and a lone per-channel ``Mul``
    folded beside a linear node; a lone per-channel ``Add`` beside one is a bias, merged
    but not reported as a BN."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = _Graph(copy)
    _channels_first(graph)
    result = OnnxFoldResult(copy)
    pairs = _pairs(graph)
    paired = {key for pair in pairs for key in pair.keys}
    folded: dict[str, FoldedEntry] = {}
    reasons: dict[str, tuple[Affine, str]] = {}
    progress = True
    while progress:
        progress = False
        for node in list(graph.graph.node):
            affine = _affine_of(graph, node)
            key = _key(node)
            if affine is None or (
                node.op_type != "BatchNormalization"
                and key not in paired
                and not _is_linear_next(graph, affine)
            ):
                continue
            try:
                entry = _fold(graph, affine)
            except _NotFoldable as reason:
                reasons[key] = (affine, str(reason))
            else:
                reasons.pop(key, None)
                folded[key] = entry
                progress = True
    _drop_unused_constants(graph)
    for key, entry in folded.items():
        if key not in paired and not entry.bn.endswith(("(Add)", "(Sub)")):
            result.folded.append(entry)
    for pair in pairs:
        _report_pair(graph, pair, folded, reasons, result)
    for key, (affine, reason) in reasons.items():
        if affine.node.op_type == "BatchNormalization":
            params = affine.params
            diagnostics = diagnose(params, [params.scale(), params.shift()])
            result.not_folded.append(NotFoldedEntry(key, reason, _stats(affine), diagnostics))
    return result


def _pairs(graph: _Graph) -> list[_Pair]:
    pairs = []
    for node in graph.graph.node:
        if node.op_type != "Mul":
            continue
        scale = _affine_of(graph, node)
        if scale is None or node.output[0] in graph.outputs:
            continue
        users = graph.consumers(node.output[0])
        if len(users) != 1 or users[0].op_type not in ("Add", "Sub"):
            continue
        if users[0].input[0] != node.output[0]:
            continue
        shift = _affine_of(graph, users[0])
        if (
            shift is not None
            and shift.axis_from_end == scale.axis_from_end
            and shift.shift.shape == scale.scale.shape
        ):
            pairs.append(_Pair(scale, shift))
    return pairs


def _report_pair(
    graph: _Graph,
    pair: _Pair,
    folded: dict[str, FoldedEntry],
    reasons: dict[str, tuple[Affine, str]],
    result: OnnxFoldResult,
) -> None:
    """One entry for the pair: folded when its scale went into a linear node and its
    shift did too, or now sits right after that node as its bias."""
    scale_key, shift_key = pair.keys
    params = math.BatchNormParams(
        np.zeros_like(pair.scale.scale),
        np.ones_like(pair.scale.scale),
        pair.scale.scale,
        pair.shift.shift,
        0.0,
    )
    affine = Affine(pair.scale.node, params.scale(), params.shift(), None, params)
    name = f"{_pair_name(scale_key, shift_key)} ({pair.scale.node.op_type} + "
    name += f"{pair.shift.node.op_type})"
    entry = folded.get(scale_key)
    if entry is not None and (shift_key in folded or _is_bias(graph, pair.shift.node)):
        target = next((n for n in graph.graph.node if _key(n) == entry.into), None)
        arrays = [] if target is None else [graph.constant(i) for i in target.input[1:] if i]
        result.folded.append(
            FoldedEntry(
                name,
                entry.into,
                entry.into_class,
                entry.direction,
                _stats(affine),
                diagnose(params, [a for a in arrays if a is not None]),
            )
        )
        return
    reason = reasons.get(scale_key, reasons.get(shift_key, (None, None)))[1]
    if reason is None:
        reason = "it is not beside a Conv, ConvTranspose, Gemm or MatMul"
    diagnostics = diagnose(params, [params.scale(), params.shift()])
    result.not_folded.append(NotFoldedEntry(name, reason, _stats(affine), diagnostics))


def _is_bias(graph: _Graph, node: onnx.NodeProto) -> bool:
    """``node`` (still in the graph) adds a constant right after a linear node that feeds
    nothing else."""
    if node not in graph.graph.node:
        return False
    producer = graph.producer(node.input[0])
    return (
        producer is not None
        and producer.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
        and len(graph.consumers(node.input[0])) == 1
        and node.input[0] not in graph.outputs
    )


def _pair_name(first: str, second: str) -> str:
    """The scope two node names share (``.../bn/batchnorm``), else both names."""
    common = ""
    for a, b in zip(first.split("/"), second.split("/"), strict=False):
        if a != b:
            break
        common += f"{a}/"
    return common.rstrip("/") or f"{first} + {second}"


def _drop_unused_constants(graph: _Graph) -> None:
    """Remove the initializers and ``Constant`` nodes that folding left unread: each fold
    gives its node fresh constants, so the replaced ones would otherwise stay in the
    file (a folded model several times the size of the original)."""
    used = _names_read(graph.graph) | graph.outputs
    used |= {value.name for value in graph.graph.input}
    kept = [t for t in graph.graph.initializer if t.name in used]
    if len(kept) != len(graph.graph.initializer):
        del graph.graph.initializer[:]
        graph.graph.initializer.extend(kept)
    for node in list(graph.graph.node):
        if node.op_type == "Constant" and not any(name in used for name in node.output):
            _remove(graph, node)
    graph.constants = {k: v for k, v in graph.constants.items() if k in used}


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` reads, subgraphs (If, Loop, Scan) included."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
            for subgraph in subgraphs:
                names |= _names_read(subgraph)
                names.update(value.name for value in subgraph.output)
    return names


def _channels_first(graph: _Graph) -> None:
    """Undo the layout shuffles of channels-last exporters (tf2onnx), so that each
    per-channel affine sits right beside its Conv:

    * two Transposes in a row that cancel out are dropped
      (``Conv -> T(NCHW->NHWC) -> T(NHWC->NCHW) -> BatchNormalization``);
    * a per-channel Mul/Add/Sub on the last axis, after a Transpose that moves the
      channel axis 1 last, moves before it (its constant reshaped to ``[C, 1, ...]``):
      ``Conv -> T -> Add -> Mul`` becomes ``Conv -> Add -> Mul -> T``.

    Both are exact; they change the copy being folded, never the original.
    """
    changed = True
    while changed:
        changed = False
        for node in list(graph.graph.node):
            if node.op_type != "Transpose":
                continue
            perm = list(_attribute(node, "perm", []))
            if len(perm) < 3 or node.output[0] in graph.outputs:
                continue
            users = graph.consumers(node.output[0])
            if len(users) != 1:
                continue
            user = users[0]
            if user.op_type == "Transpose" and user.input[0] == node.output[0]:
                second = list(_attribute(user, "perm", []))
                cancels = len(second) == len(perm) and [perm[i] for i in second] == list(
                    range(len(perm))
                )
                if cancels and user.output[0] not in graph.outputs:
                    for other in graph.graph.node:
                        other.input[:] = [
                            node.input[0] if name == user.output[0] else name
                            for name in other.input
                        ]
                    _remove(graph, user)
                    _remove(graph, node)
                    changed = True
                    break
            if perm[-1] != 1 or user.op_type not in ("Mul", "Add", "Sub"):
                continue
            if len(user.input) != 2 or user.input[0] != node.output[0]:
                continue
            operand = graph.constant(user.input[1])
            if operand is None or operand.dtype.kind != "f":
                continue
            vector, axis = _channel_vector(operand)
            if vector is None or axis != 0 or operand.ndim > len(perm):
                continue
            moved = f"{user.output[0]}_channels_first"
            graph.set_constant(user, 1, vector.reshape(-1, *[1] * (len(perm) - 2)))
            user.input[0] = node.input[0]
            node.input[0] = moved
            node.output[0], user.output[0] = user.output[0], moved
            graph.graph.node.remove(user)
            graph.graph.node.insert(list(graph.graph.node).index(node), user)
            changed = True
            break


def _is_linear_next(graph: _Graph, affine: Affine) -> bool:
    """Mul/Add/Sub are folded only beside a linear node (elsewhere they are just arithmetic)."""
    producer = graph.producer(affine.node.input[0])
    users = graph.consumers(affine.node.output[0])
    linear = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    if (
        producer is not None
        and producer.op_type == "Add"
        and graph.constant(producer.input[1]) is not None
    ):
        biased = graph.producer(producer.input[0])  # MatMul -> Add(bias) -> this
        if biased is not None and biased.op_type == "MatMul":
            return True
    return (producer is not None and producer.op_type in linear) or (
        len(users) == 1 and users[0].op_type in linear
    )


def _stats(affine: Affine) -> BatchNormStats:
    return BatchNormStats.of(affine.params, affine.scale)


def _fold(graph: _Graph, affine: Affine) -> FoldedEntry:
    name = affine.node.name or affine.node.output[0]
    try:
        target, direction = _fold_backward(graph, affine), "backward"
    except _NotFoldable as backward:
        try:
            target, direction = _fold_forward(graph, affine), "forward"
        except _NotFoldable as forward:
            raise _NotFoldable(
                f"cannot fold backward ({backward}) nor forward ({forward})"
            ) from None
    folded_arrays = [graph.constant(name) for name in target.input[1:] if name]
    return FoldedEntry(
        f"{name} ({affine.node.op_type})",
        target.name or target.output[0],
        target.op_type,
        direction,
        _stats(affine),
        diagnose(affine.params, [a for a in folded_arrays if a is not None]),
    )


def _remove(graph: _Graph, node: onnx.NodeProto) -> None:
    graph.graph.node.remove(node)


def _fold_backward(graph: _Graph, affine: Affine) -> onnx.NodeProto:
    source = affine.node.input[0]
    producer = graph.producer(source)
    if producer is None:
        raise _NotFoldable("its input is a graph input")
    if producer.op_type == "Add":
        return _fold_into_matmul_add(graph, affine, producer)
    if producer.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        raise _NotFoldable(f"'{producer.name}' is a {producer.op_type}, which has no weights")
    graph.sole_consumer(source, f"the output of '{producer.name}'")
    weight = graph.constant(producer.input[1])
    if weight is None:
        raise _NotFoldable(f"the weight of '{producer.name}' is not a constant")
    scale, shift = affine.scale, affine.shift
    if producer.op_type in ("Conv", "ConvTranspose"):
        if affine.axis_from_end is not None:
            raise _NotFoldable("it scales the last axis, not the channel axis 1")
        channels = weight.shape[0] if producer.op_type == "Conv" else None
        if producer.op_type == "Conv":
            if channels != scale.shape[0]:
                raise _NotFoldable(f"'{producer.name}' has {channels} output channels")
            new_weight = weight * scale.reshape(-1, *[1] * (weight.ndim - 1))
        else:
            group = int(_attribute(producer, "group", 1))
            per_group = weight.shape[1]
            if group * per_group != scale.shape[0]:
                raise _NotFoldable(f"'{producer.name}' has {group * per_group} output channels")
            blocks = weight.reshape(group, weight.shape[0] // group, per_group, *weight.shape[2:])
            factors = scale.reshape(group, 1, per_group, *[1] * (weight.ndim - 2))
            new_weight = (blocks * factors).reshape(weight.shape)
        bias = (
            graph.constant(producer.input[2])
            if len(producer.input) > 2 and producer.input[2]
            else None
        )
        new_bias = (np.zeros(scale.shape[0]) if bias is None else bias) * scale + shift
        graph.set_constant(producer, 1, new_weight.astype(weight.dtype))
        graph.set_constant(producer, 2, new_bias.astype(weight.dtype))
    elif producer.op_type == "Gemm":
        if affine.axis_from_end not in (None, 0):
            raise _NotFoldable("it scales an axis Gemm does not produce")
        if float(_attribute(producer, "beta", 1.0)) != 1.0 and len(producer.input) > 2:
            raise _NotFoldable(f"'{producer.name}' scales its bias (beta != 1)")
        trans_b = int(_attribute(producer, "transB", 0))
        new_weight = weight * (scale[:, None] if trans_b else scale[None, :])
        alpha = float(_attribute(producer, "alpha", 1.0))
        bias = (
            graph.constant(producer.input[2])
            if len(producer.input) > 2 and producer.input[2]
            else None
        )
        if len(producer.input) > 2 and producer.input[2] and bias is None:
            raise _NotFoldable(f"the bias of '{producer.name}' is not a constant")
        base = np.zeros(scale.shape[0]) if bias is None else np.broadcast_to(bias, scale.shape)
        new_bias = base * scale + shift
        del alpha  # alpha scales A*B only; scaling B's columns is exact either way
        graph.set_constant(producer, 1, new_weight.astype(weight.dtype))
        graph.set_constant(producer, 2, new_bias.astype(weight.dtype))
        _set_attribute(producer, "beta", 1.0)
    else:  # MatMul: constant weight [K, N]; the shift needs an Add
        name = producer.name or producer.output[0]
        if np.all(scale == 1.0):
            raise _NotFoldable(f"an Add right after '{name}' is its bias: nothing to fold")
        if affine.axis_from_end != 0 and not (affine.axis_from_end is None and weight.ndim == 2):
            raise _NotFoldable("it scales an axis MatMul does not produce")
        if weight.ndim != 2 or weight.shape[1] != scale.shape[0]:
            raise _NotFoldable(f"the weight of '{producer.name}' is not [K, {scale.shape[0]}]")
        graph.set_constant(producer, 1, (weight * scale[None, :]).astype(weight.dtype))
        if np.any(shift):
            add = onnx.helper.make_node(
                "Add",
                [producer.output[0], ""],
                [affine.node.output[0]],
                name=f"{name}_shift",
            )
            graph.set_constant(add, 1, shift.astype(weight.dtype))
            index = list(graph.graph.node).index(producer)
            graph.graph.node.insert(index + 1, add)
            _remove(graph, affine.node)
            return producer
    producer.output[0] = affine.node.output[0]
    _remove(graph, affine.node)
    return producer


def _fold_into_matmul_add(graph: _Graph, affine: Affine, add: onnx.NodeProto) -> onnx.NodeProto:
    """``MatMul -> Add(bias) -> BN``: the pair is one linear layer."""
    matmul = graph.producer(add.input[0])
    bias = graph.constant(add.input[1])
    if matmul is None or matmul.op_type != "MatMul" or bias is None:
        raise _NotFoldable(f"'{add.name}' is an Add, which has no weights to fold into")
    graph.sole_consumer(add.output[0], f"the output of '{add.name}'")
    graph.sole_consumer(matmul.output[0], f"the output of '{matmul.name}'")
    weight = graph.constant(matmul.input[1])
    scale, shift = affine.scale, affine.shift
    if weight is None or weight.ndim != 2 or weight.shape[1] != scale.shape[0]:
        raise _NotFoldable(f"the weight of '{matmul.name}' is not a constant [K, {len(scale)}]")
    if affine.axis_from_end not in (0, None) or bias.size not in (1, scale.shape[0]):
        raise _NotFoldable("it does not scale the MatMul's output features")
    graph.set_constant(matmul, 1, (weight * scale[None, :]).astype(weight.dtype))
    new_bias = np.broadcast_to(bias.reshape(-1), scale.shape) * scale + shift
    graph.set_constant(add, 1, new_bias.astype(bias.dtype))
    add.output[0] = affine.node.output[0]
    _remove(graph, affine.node)
    return matmul


def _fold_forward(graph: _Graph, affine: Affine) -> onnx.NodeProto:
    output = affine.node.output[0]
    consumer = graph.sole_consumer(output, "its output")
    if consumer.op_type not in ("Conv", "Gemm", "MatMul") or consumer.input[0] != output:
        raise _NotFoldable(f"it feeds a {consumer.op_type}, which has no weights to fold into")
    weight = graph.constant(consumer.input[1])
    if weight is None:
        raise _NotFoldable(f"the weight of '{consumer.name}' is not a constant")
    scale, shift = affine.scale, affine.shift
    if consumer.op_type == "Conv":
        pads = _attribute(consumer, "pads", [])
        if any(pads) or _attribute(consumer, "auto_pad", b"NOTSET") not in (
            b"NOTSET",
            "NOTSET",
            b"VALID",
            "VALID",
        ):
            raise _NotFoldable(
                f"'{consumer.name}' pads its input: the border would not see the shift"
            )
        if int(_attribute(consumer, "group", 1)) != 1:
            raise _NotFoldable(f"'{consumer.name}' is a grouped convolution")
        if affine.axis_from_end is not None or weight.shape[1] != scale.shape[0]:
            raise _NotFoldable("it does not scale the convolution's input channels")
        factors = scale.reshape(1, -1, *[1] * (weight.ndim - 2))
        bias = (
            graph.constant(consumer.input[2])
            if len(consumer.input) > 2 and consumer.input[2]
            else None
        )
        taps = weight.astype(np.float64).reshape(weight.shape[0], weight.shape[1], -1)
        added = taps.sum(axis=2) @ shift
        graph.set_constant(consumer, 1, (weight * factors).astype(weight.dtype))
        base = np.zeros(weight.shape[0]) if bias is None else bias
        graph.set_constant(consumer, 2, (base + added).astype(weight.dtype))
    else:
        trans_b = int(_attribute(consumer, "transB", 0)) if consumer.op_type == "Gemm" else 0
        matrix = weight.T if trans_b else weight
        if (
            matrix.ndim != 2
            or matrix.shape[0] != scale.shape[0]
            or affine.axis_from_end not in (0, None)
        ):
            raise _NotFoldable("it does not scale the input features of the next layer")
        if consumer.op_type == "Gemm" and float(_attribute(consumer, "beta", 1.0)) != 1.0:
            raise _NotFoldable(f"'{consumer.name}' scales its bias (beta != 1)")
        new_matrix = matrix * scale[:, None]
        added = shift @ matrix.astype(np.float64)
        if consumer.op_type == "Gemm":
            alpha = float(_attribute(consumer, "alpha", 1.0))
            bias = (
                graph.constant(consumer.input[2])
                if len(consumer.input) > 2 and consumer.input[2]
                else None
            )
            base = (
                np.zeros(matrix.shape[1])
                if bias is None
                else np.broadcast_to(bias, (matrix.shape[1],))
            )
            graph.set_constant(
                consumer, 1, (new_matrix.T if trans_b else new_matrix).astype(weight.dtype)
            )
            graph.set_constant(consumer, 2, (base + alpha * added).astype(weight.dtype))
        else:
            graph.set_constant(consumer, 1, new_matrix.astype(weight.dtype))
            if np.any(added):
                users = graph.consumers(consumer.output[0])
                new_out = f"{consumer.output[0]}_unshifted"
                add = onnx.helper.make_node(
                    "Add", [new_out, ""], [consumer.output[0]], name=f"{consumer.name}_shift"
                )
                graph.set_constant(add, 1, added.astype(weight.dtype))
                consumer.output[0] = new_out
                index = list(graph.graph.node).index(consumer)
                graph.graph.node.insert(index + 1, add)
                del users
    consumer.input[0] = affine.node.input[0]
    _remove(graph, affine.node)
    return consumer


def _bias(graph: _Graph, node: onnx.NodeProto) -> np.ndarray | None:
    """A node's constant bias (input 2), or None when it has none."""
    if len(node.input) > 2 and node.input[2]:
        bias = graph.constant(node.input[2])
        if bias is None:
            raise _NotFoldable(f"the bias of '{node.name}' is not a constant")
        return bias
    return None


def _set_attribute(node: onnx.NodeProto, name: str, value: float) -> None:
    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(onnx.helper.make_attribute(name, value))
