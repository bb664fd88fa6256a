"""What a model version's session costs in memory, before and while it is built.

ONNX Runtime keeps a session's constants for as long as the session lives:
initializers, ``Constant`` nodes, and every tensor its constant folding computes
ahead from them. A 721-byte model holding ``ConstantOfShape([125000000])`` thus
becomes a 500 MB initializer in the serving process. ``footprint`` estimates this
from the graph without building anything: shape inference gives the shapes, and a
walk in graph order finds what is computable from constants alone, following the
small integer tensors that size ``ConstantOfShape``, ``Expand``, ``Tile`` and
``Range`` (ONNX's own data propagation is not used: it takes minutes on exactly such
a graph). ``resident_bytes`` reads the process's resident memory, so the loader can
also measure what building the session really added.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

NONDETERMINISTIC = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)
"""Operators constant folding leaves alone: their outputs differ from run to run."""

_SMALL = 64
"""Most elements of an integer tensor whose values the walk follows (shapes, repeats)."""

_LARGEST_VALUE = 2**63
"""Values the walk follows stay within int64, as they do in ONNX Runtime: a chain of
``Mul`` squaring a constant would otherwise grow Python integers to gigabits, holding
the interpreter (and the event loop) for hours on a model of a few hundred bytes."""

Shapes = dict[str, tuple[int, tuple[int, ...] | None]]

_STRIP_BYTES = 1 << 20
"""Initializers larger than this lose their data before shape inference: their size
comes from their dimensions, and no operator reads a shape out of a tensor that big."""


@dataclass
class Footprint:
    """``constant_bytes``: what the session would hold in constants (an upper bound:
    intermediates folded away are counted too, as building the session holds them for a
    while); ``computed_bytes``: the tensors of known shape computed on every run;
    ``largest_bytes`` / ``largest``: the largest single tensor of either kind."""

    constant_bytes: int = 0
    computed_bytes: int = 0
    largest_bytes: int = 0
    largest: str = ""

    @property
    def total_bytes(self) -> int:
        return self.constant_bytes + self.computed_bytes

    def saw(self, size: int, what: str) -> None:
        if size > self.largest_bytes:
            self.largest_bytes, self.largest = size, what


def footprint(path: Path) -> Footprint:
    """The memory estimate of the ONNX model at ``path`` (its external data is never read)."""
    model = onnx.load(str(path), load_external_data=False)
    result = Footprint()
    for initializer in model.graph.initializer:
        if len(initializer.raw_data) > _STRIP_BYTES:
            initializer.ClearField("raw_data")
    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # onnx raises its own kinds; the declared shapes are still known
        inferred = model
    shapes: Shapes = {}
    _collect_shapes(inferred.graph, shapes)
    _walk(inferred.graph, set(), {}, shapes, result)
    return result


def resident_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc/self/status``), None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _walk(
    graph: onnx.GraphProto,
    constant: set[str],
    values: dict[str, np.ndarray],
    shapes: Shapes,
    result: Footprint,
) -> None:
    """Add ``graph``'s constants to ``result``; ``constant``: the names known to be
    constant here (an outer graph's, for a subgraph); ``values``: the small integer
    tensors among them."""
    inputs = {value.name for value in graph.input}
    for initializer in graph.initializer:
        size = _tensor_bytes(initializer.data_type, tuple(initializer.dims))
        result.constant_bytes += size
        result.saw(size, f"initializer '{initializer.name}' {list(initializer.dims)}")
        if initializer.name not in inputs:  # an input's default can be overridden
            constant.add(initializer.name)
            _remember(values, initializer.name, initializer)
    for sparse in graph.sparse_initializer:
        size = _tensor_bytes(sparse.values.data_type, tuple(sparse.dims))
        result.constant_bytes += size  # ONNX Runtime makes it dense
        result.saw(size, f"sparse initializer '{sparse.values.name}' {list(sparse.dims)}")
        constant.add(sparse.values.name)
    for node in graph.node:
        subgraphs = [attribute.g for attribute in node.attribute if attribute.HasField("g")]
        subgraphs += [sub for attribute in node.attribute for sub in attribute.graphs]
        for subgraph in subgraphs:
            _walk(subgraph, set(constant), dict(values), shapes, result)
        foldable = (
            node.op_type not in NONDETERMINISTIC
            and not subgraphs
            and all(name in constant for name in node.input if name)
        )
        _follow(node, values, shapes)
        for output in node.output:
            if not output or output not in shapes:
                continue
            elem_type, shape = shapes[output]
            if shape is None:
                continue
            size = _tensor_bytes(elem_type, shape)
            result.saw(size, f"{node.op_type} output '{output}' {list(shape)}")
            if foldable:
                result.constant_bytes += size
            else:
                result.computed_bytes += size
        if foldable:
            constant.update(name for name in node.output if name)


def _remember(values: dict[str, np.ndarray], name: str, tensor: onnx.TensorProto) -> None:
    size = 1
    for dim in tensor.dims:
        size *= dim
    if tensor.data_type in _INTEGER_TYPES and size <= _SMALL:
        with contextlib.suppress(Exception):  # a malformed tensor: ONNX Runtime says so
            values[name] = numpy_helper.to_array(tensor).astype(object)


_INTEGER_TYPES = frozenset({onnx.TensorProto.INT32, onnx.TensorProto.INT64})


def _follow(node: onnx.NodeProto, values: dict[str, np.ndarray], shapes: Shapes) -> None:
    """Track the small integer values ``node`` computes from known ones (Python integers,
    so no product overflows), and the output shape of the operators sized by them."""
    op, known = node.op_type, [values.get(name) for name in node.input]
    out = node.output[0] if node.output else ""
    result: np.ndarray | None = None
    try:
        if op == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    _remember(values, out, attribute.t)
            return
        if op == "Shape" and node.input[0] in shapes and shapes[node.input[0]][1] is not None:
            bounds = {attribute.name: attribute.i for attribute in node.attribute}
            dims = shapes[node.input[0]][1][bounds.get("start", 0) : bounds.get("end")]
            result = np.array(dims, dtype=object)
        else:
            if op in ("Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten", "Reshape"):
                if known[0] is not None:
                    result = known[0].reshape(-1)
            elif op == "Concat" and all(value is not None for value in known):
                result = np.concatenate([value.reshape(-1) for value in known])
            elif op in ("Mul", "Add") and len(known) == 2 and None not in known:
                result = known[0] * known[1] if op == "Mul" else known[0] + known[1]
        if result is not None and result.size <= _SMALL and _in_range(result):
            values[out] = result
        sized = _sized_shape(op, known, shapes.get(node.input[0]) if node.input else None)
        if sized is not None and out:
            elem_type = shapes.get(out, (onnx.TensorProto.FLOAT, None))[0]
            if op == "ConstantOfShape":
                elem_type = _constant_of_shape_type(node)
            shapes[out] = (elem_type, sized)
    except (ValueError, TypeError, IndexError):  # values that make no sense: no estimate
        return


def _in_range(values: np.ndarray) -> bool:
    return all(-_LARGEST_VALUE <= int(value) < _LARGEST_VALUE for value in values.reshape(-1))


def _sized_shape(
    op: str, known: list[np.ndarray | None], first: tuple[int, tuple[int, ...] | None] | None
) -> tuple[int, ...] | None:
    """The output shape of an operator whose size an integer input gives, when known."""
    if op == "ConstantOfShape" and known and known[0] is not None:
        return tuple(max(int(dim), 0) for dim in known[0].reshape(-1))
    if op == "Range" and len(known) == 3 and None not in known:
        start, limit, delta = (int(value.reshape(-1)[0]) for value in known)
        return (max(-(-(limit - start) // delta), 0),) if delta else None
    input_shape = first[1] if first else None
    if input_shape is None or len(known) < 2 or known[1] is None:
        return None
    wanted = [int(dim) for dim in known[1].reshape(-1)]
    if op == "Tile" and len(wanted) == len(input_shape):
        return tuple(dim * max(times, 0) for dim, times in zip(input_shape, wanted, strict=True))
    if op == "Expand":
        rank = max(len(wanted), len(input_shape))
        padded = (1,) * (rank - len(input_shape)) + tuple(input_shape)
        wanted = [1] * (rank - len(wanted)) + wanted
        return tuple(max(have, want) for have, want in zip(padded, wanted, strict=True))
    return None


def _constant_of_shape_type(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "value":
            return attribute.t.data_type
    return onnx.TensorProto.FLOAT


def _collect_shapes(graph: onnx.GraphProto, shapes: Shapes) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            continue
        dims = tensor.shape.dim if tensor.HasField("shape") else None
        static = dims is not None and all(
            dim.HasField("dim_value") and dim.dim_value >= 0 for dim in dims
        )
        shape = tuple(dim.dim_value for dim in dims) if static else None
        shapes[value.name] = (tensor.elem_type, shape)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _collect_shapes(attribute.g, shapes)
            for subgraph in attribute.graphs:
                _collect_shapes(subgraph, shapes)


def _tensor_bytes(elem_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor (Python integers: no overflow whatever the dimensions)."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, ValueError, TypeError):  # strings and unknown types
        itemsize = 8
    count = 1
    for dim in shape:
        count *= max(int(dim), 0)
    return count * max(itemsize, 1)
