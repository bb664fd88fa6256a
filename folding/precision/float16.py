"""The float16 variant: weights and compute in float16, inputs and outputs float32
(ONNX Runtime's float16 converter with ``keep_io_types``). Nodes whose folded
weights would overflow float16 (the report's ``fp16_overflow`` diagnostic) stay
float32; they are named in the variant's notes."""

from __future__ import annotations

import onnx

from folding.diagnostics import fp16_overflow


def to_float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` computing in float16, inputs and outputs float32; overflowing nodes kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    large = {
        tensor.name
        for tensor in model.graph.initializer
        if tensor.data_type == onnx.TensorProto.FLOAT
        and fp16_overflow([onnx.numpy_helper.to_array(tensor)])
    }
    kept = [node.name for node in model.graph.node if large & set(node.input)]
    notes = []
    if kept:
        notes.append(f"kept float32 (weights beyond float16's range): {', '.join(kept[:8])}")
    converted = convert_float_to_float16(
        _constants_as_initializers(model),  # a copy: the converter works in place
        keep_io_types=True,
        node_block_list=kept or None,
    )
    converted.ir_version = model.ir_version
    return converted, notes


def _constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level ``Constant`` tensors are initializers: the
    float16 converter casts initializers but leaves a Constant node's value float32."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    kept = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model
