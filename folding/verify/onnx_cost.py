"""How much one probe row costs an ONNX graph: the multiply-accumulates of its
convolutions and matrix products, read off the shapes ONNX shape inference gives a
copy of the graph without its weights (their shapes stand in for them, so nothing the
size of the weights is copied; small constants such as a Reshape's shape are kept).
What ``folding.verify.probes.sample_count`` does for a Keras graph, for a graph that
has no Keras layers (a converted SavedModel)."""

from __future__ import annotations

import math

import onnx

from folding.verify.probes import DYNAMIC_DIM_PROBE

LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SMALL_CONSTANT = 64
"""Initializers of at most this many elements keep their values in the copy shape
inference reads (a Reshape's target shape, say); larger ones only their shapes."""


def multiply_accumulates(model: onnx.ModelProto) -> int:
    """Rough per-row MACs of the graph's Conv, ConvTranspose, Gemm and MatMul nodes
    (a batch of one, every other open dimension ``DYNAMIC_DIM_PROBE``); 0 when shape
    inference cannot tell."""
    shapes = _inferred_shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in LINEAR_OPS or len(node.input) < 2:
            continue
        weight = shapes.get(node.input[1])
        if not weight:
            continue
        if node.op_type == "Conv":
            positions = shapes.get(node.output[0], ())[2:]
        elif node.op_type == "ConvTranspose":
            positions = shapes.get(node.input[0], ())[2:]
        else:  # a matrix product: every row of the output but the last axis
            positions = shapes.get(node.output[0], ())[1:-1]
        total += math.prod(positions) * math.prod(weight)
    return total


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Tensor name -> its static shape (positive dims only), initializers included."""
    graph = model.graph
    skeleton = onnx.GraphProto(name=graph.name)
    skeleton.node.extend(graph.node)  # the weights are initializers, not in the nodes
    initializers = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        fixed = skeleton.input.add()
        fixed.CopyFrom(value)
        for index, dim in enumerate(fixed.type.tensor_type.shape.dim):
            if not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.Clear()
                dim.dim_value = 1 if index == 0 else DYNAMIC_DIM_PROBE
    for tensor in graph.initializer:
        if math.prod(tensor.dims) <= SMALL_CONSTANT:  # a shape, an axis: inference reads it
            skeleton.initializer.append(tensor)
        else:
            skeleton.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    skeleton.output.extend(graph.output)
    shell = onnx.ModelProto(ir_version=model.ir_version, graph=skeleton)
    shell.opset_import.extend(model.opset_import)
    try:
        inferred = onnx.shape_inference.infer_shapes(shell).graph
    except Exception:  # onnx's InferenceError and friends: no cost known
        return dict(initializers)
    shapes = dict(initializers)
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(dim.HasField("dim_value") and dim.dim_value > 0 for dim in dims):
            shapes[value.name] = tuple(dim.dim_value for dim in dims)
    return shapes
