"""One layer's ONNX graph (from the general exporter) spliced into the direct export.

When the direct exporter meets a layer it has no writer for and cannot trace
into (a custom layer whose ``call`` needs real tensors, say), that layer alone
goes through tf2onnx; its nodes and initializers are copied into the model
being written under a prefix, its inputs wired to the direct export's tensors
and its outputs handed back. The rest of the model stays direct: its
BatchNormalizations are folded and kept as the direct exporter writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from folding.export.direct import OnnxWriter

LayerExport = Callable[..., onnx.ModelProto]
"""``export(call, graph, opset)``: the call's layer alone as an ONNX model whose
inputs are the call's tensor arguments in order and whose outputs are its outputs."""


class CannotSplice(Exception):
    """The layer's graph has a form that cannot be copied into another graph."""


def splice(
    writer: OnnxWriter,
    sub: onnx.ModelProto,
    inputs: list[str],
    prefix: str,
    opsets: dict[str, int],
) -> list[str]:
    """Copy ``sub``'s nodes into ``writer``, reading ``inputs``; returns the names
    that carry ``sub``'s outputs. ``opsets`` collects the extra domains it uses."""
    graph = sub.graph
    if len(graph.input) != len(inputs):
        raise CannotSplice(f"its graph has {len(graph.input)} inputs, the layer {len(inputs)}")
    for opset in sub.opset_import:
        domain = opset.domain or ""
        if domain in ("", "ai.onnx"):
            if opset.version > writer.opset:
                raise CannotSplice(f"it needs opset {opset.version}")
        else:
            opsets[domain] = max(opsets.get(domain, 0), opset.version)
    names: dict[str, str] = {"": ""}
    for value, name in zip(graph.input, inputs, strict=True):
        names[value.name] = name

    def renamed(name: str) -> str:
        if name not in names:
            names[name] = writer.fresh(f"{prefix}/{name}")
        return names[name]

    _resize_to_sizes(sub)
    for initializer in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializer)
        copy.name = renamed(initializer.name)
        writer.initializers.append(copy)
    for node in graph.node:
        if any(
            attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for attribute in node.attribute
        ):
            raise CannotSplice(f"it contains a {node.op_type} with a subgraph")
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [renamed(name) for name in node.input]
        copy.output[:] = [renamed(name) for name in node.output]
        copy.name = writer.fresh(f"{prefix}/{node.name or node.op_type}")
        writer.nodes.append(copy)
    return [renamed(output.name) for output in graph.output]


def _resize_to_sizes(sub: onnx.ModelProto) -> None:
    """A Resize with constant ``scales`` (as tf2onnx writes an upsampling to a size
    that is not a whole multiple, 5 -> 9 as scale 1.8) given the output sizes instead:
    ONNX shape inference floors ``5 * float32(1.8)`` to 8 where ONNX Runtime's kernel
    and Keras give 9, and once the layer's graph sits inside a larger model that
    disagreement fails the next Add. The sizes are the input's leading dimensions,
    read at run time, and the rounded products of the others."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = sub.graph
    constants = {init.name: init for init in graph.initializer}
    resizes = [
        node
        for node in graph.node
        if node.op_type == "Resize" and len(node.input) == 3 and node.input[2] in constants
    ]
    if not resizes:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(sub).graph
    except Exception:  # nothing to learn: leave the graph as it is
        return
    shapes = {
        value.name: [
            d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim
        ]
        for value in [*inferred.input, *inferred.value_info]
    }
    for node in resizes:
        scales = numpy_helper.to_array(constants[node.input[2]]).astype(np.float64)
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) != len(scales):
            continue
        leading = 0
        while leading < len(scales) and scales[leading] == 1.0:
            leading += 1
        rest = shape[leading:]
        if any(dim is None for dim in rest):
            continue
        sizes = [round(dim * scale) for dim, scale in zip(rest, scales[leading:], strict=True)]
        prefix = f"{node.name}_sizes"
        shape_out, lead_out, sizes_out = f"{prefix}_shape", f"{prefix}_lead", prefix
        fixed = numpy_helper.from_array(np.asarray(sizes, np.int64), f"{prefix}_fixed")
        starts = numpy_helper.from_array(np.asarray([0], np.int64), f"{prefix}_start")
        ends = numpy_helper.from_array(np.asarray([leading], np.int64), f"{prefix}_end")
        graph.initializer.extend([fixed, starts, ends])
        at = list(graph.node).index(node)
        new_nodes = [
            helper.make_node("Shape", [node.input[0]], [shape_out], name=shape_out),
            helper.make_node(
                "Slice", [shape_out, starts.name, ends.name], [lead_out], name=lead_out
            ),
            helper.make_node("Concat", [lead_out, fixed.name], [sizes_out], name=sizes_out, axis=0),
        ]
        for offset, new in enumerate(new_nodes):
            graph.node.insert(at + offset, new)
        node.input[2] = ""
        node.input.append(sizes_out)
