"""Small ONNX models ``y = x + c`` whose 4-float tensor ``c`` keeps its bytes in another
file (external data), held in each place a model can hold a tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WHERE = ("constant", "initializer", "sparse_initializer", "sparse_constant", "subgraph", "function")


def external_tensor(name: str, location: str, dims=(4,), length: int = 16) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _sparse(location: str) -> onnx.SparseTensorProto:
    values = external_tensor("c", location, dims=(2,), length=8)
    indices = numpy_helper.from_array(np.array([0, 2], np.int64), "c_indices")
    return helper.make_sparse_tensor(values, indices, [4])


def _model(nodes, initializers=(), sparse=(), functions=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [*nodes, helper.make_node("Add", ["x", "c"], ["y"], name="add")],
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=list(initializers),
        sparse_initializer=list(sparse),
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("hostile", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 9
    return model


def hostile(where: str, location: str) -> onnx.ModelProto:
    """``y = x + c`` with ``c`` read from ``location`` (``where`` names how it is held)."""
    tensor = external_tensor("c_value", location)
    if where == "constant":
        return _model([helper.make_node("Constant", [], ["c"], name="leak", value=tensor)])
    if where == "initializer":
        tensor.name = "c"
        return _model([], initializers=[tensor])
    if where == "sparse_initializer":
        return _model([], sparse=[_sparse(location)])
    if where == "sparse_constant":
        node = helper.make_node("Constant", [], ["c"], name="leak", sparse_value=_sparse(location))
        return _model([node])
    if where == "subgraph":
        branch = helper.make_graph(
            [helper.make_node("Constant", [], ["inner"], name="leak", value=tensor)],
            "branch",
            [],
            [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [4])],
        )
        flag = numpy_helper.from_array(np.array(True), "flag_value")
        return _model(
            [
                helper.make_node("Constant", [], ["flag"], name="flag", value=flag),
                helper.make_node(
                    "If", ["flag"], ["c"], name="choose", then_branch=branch, else_branch=branch
                ),
            ]
        )
    if where == "function":
        function = helper.make_function(
            "hostile",
            "Leak",
            [],
            ["out"],
            [helper.make_node("Constant", [], ["out"], name="leak", value=tensor)],
            [helper.make_opsetid("", 17)],
        )
        node = helper.make_node("Leak", [], ["c"], name="call", domain="hostile")
        return _model([node], functions=[function])
    raise ValueError(where)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path
