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
