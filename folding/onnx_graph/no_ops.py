"""Pre-pass: arithmetic that changes nothing goes: ``x + 0``, ``x - 0``, ``x * 1``,
``x / 1`` with a one-element constant (timm's MobileOne / FastViT blocks start their
sum of branches at ``0``: ``bn(x) + 0 + conv(x)``), so the BN beside it is seen.

Exact (only the sign of a zero result may change); a node whose output is a graph
output, or whose other operand is a constant too, is left alone.
"""

from __future__ import annotations

from folding.onnx_graph.graph import NotFoldable, OnnxGraph

NEUTRAL = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}
COMMUTATIVE = ("Add", "Mul")


def drop_no_ops(graph: OnnxGraph) -> None:
    for node in graph.nodes():
        if node.op_type not in NEUTRAL or len(node.input) != 2:
            continue
        if node.output[0] in graph.outputs or node.input[0] == node.input[1]:
            continue
        for index in (1, 0) if node.op_type in COMMUTATIVE else (1,):
            operand = graph.constant(node.input[index])
            other = node.input[1 - index]
            if operand is None or operand.size != 1 or graph.constant(other) is not None:
                continue
            rank = graph.rank(other)
            if operand.ndim and (rank is None or rank < operand.ndim):
                continue  # it could broadcast ``other`` up to a higher rank
            if operand.dtype.kind != "f" or float(operand.reshape(-1)[0]) != NEUTRAL[node.op_type]:
                continue
            if graph.elem_type(other) not in (None, graph.elem_type(node.output[0])):
                continue
            try:
                graph.bypass(node, other)
            except NotFoldable:  # read inside a subgraph: left as it is
                continue
            break
