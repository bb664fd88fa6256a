"""The ONNX graph's use lists and constants, as the rules rely on them."""

import numpy as np
import pytest

from folding.onnx_graph.graph import NotFoldable, OnnxGraph
from tests.folding.onnx_graph.helpers import Builder, array


def chain():
    b = Builder()
    b.node("Relu", ["x"], "a")
    b.node("Add", ["a", "a"], "twice")
    b.node("Mul", ["a", b.const("c", array((1,)))], "y")
    b.node("Sigmoid", ["twice"], "z")
    return b.model([("x", [2, 3])], ["y", "z"])


def test_users_and_producers_are_lookups_kept_true_by_edits():
    graph = OnnxGraph(chain())
    relu = graph.producer("a")
    assert relu.op_type == "Relu"
    assert [n.name for n in graph.users("a")] == ["twice", "y"]  # Add reads it twice: once
    mul = graph.producer("y")
    graph.set_input(mul, 0, "x")
    assert [n.name for n in graph.users("a")] == ["twice"]
    assert [n.name for n in graph.users("x")] == ["a", "y"]
    graph.rename_output(relu, 0, "a2")
    assert graph.producer("a") is None and graph.producer("a2") is relu
    graph.remove(mul)
    assert [n.name for n in graph.users("x")] == ["a"] and graph.producer("y") is None


def test_sole_user_refuses_shared_tensors_and_graph_outputs():
    graph = OnnxGraph(chain())
    with pytest.raises(NotFoldable, match="feeds 2 nodes"):
        graph.sole_user("a", "a")
    with pytest.raises(NotFoldable, match="graph output"):
        graph.sole_user("y", "y")
    assert graph.sole_user("twice", "twice").name == "z"


def test_bypass_and_append_after_keep_output_names():
    model = chain()
    graph = OnnxGraph(model)
    graph.append_after("y", "Add", np.ones(1, np.float32), "shift")
    add = graph.producer("y")
    assert add.op_type == "Add" and graph.producer(add.input[0]).name == "y"
    graph.bypass(add, add.input[0])
    assert graph.producer("y").op_type == "Mul"
    graph.commit()
    assert [n.op_type for n in model.graph.node] == ["Relu", "Add", "Mul", "Sigmoid"]


def test_commit_orders_topologically_and_drops_what_no_output_needs():
    model = chain()
    graph = OnnxGraph(model)
    sigmoid = graph.producer("z")
    graph.set_input(sigmoid, 0, "a")  # "twice" is now read by nothing
    graph.set_input(graph.producer("a"), 0, "x")
    graph.commit()
    assert [n.name for n in model.graph.node] == ["a", "y", "z"]
    assert [t.name for t in model.graph.initializer] == ["c"]


def test_constants_through_identity_transpose_reshape_and_arithmetic():
    b = Builder()
    weight = array((2, 3))
    w = b.node("Identity", [b.node("Cast", [b.const("w", weight)], "cast", to=1)], "ident")
    t = b.node("Transpose", [w], "t", perm=[1, 0])
    r = b.node("Reshape", [t, b.const("shape", np.array([-1], np.int64))], "r")
    s = b.node("Sqrt", [b.node("Add", [r, b.const("eps", np.float32(1.0))], "plus")], "s")
    b.node("Mul", ["x", s], "y")
    graph = OnnxGraph(b.model([("x", [6])], ["y"]))
    np.testing.assert_array_equal(graph.constant("t"), weight.T)
    np.testing.assert_array_equal(graph.constant("s"), np.sqrt(weight.T.reshape(-1) + 1))
    assert graph.constant("x") is None and graph.constant("y") is None


def test_a_constant_that_would_be_bigger_than_its_inputs_is_not_evaluated():
    b = Builder()
    b.node("Mul", [b.const("col", array((100, 1))), b.const("row", array((1, 100)))], "big")
    b.node("Add", ["x", "big"], "y")
    graph = OnnxGraph(b.model([("x", [100, 100])], ["y"]))
    assert graph.constant("big") is None
