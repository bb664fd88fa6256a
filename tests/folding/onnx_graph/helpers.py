"""Hand-made ONNX graphs for the rules' tests, and their check by ONNX Runtime."""

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def array(shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


class Builder:
    """Nodes and initializers of one graph, added in order."""

    def __init__(self):
        self.nodes = []
        self.initializers = []

    def const(self, name, value):
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def bn_params(self, prefix, channels):
        return [
            self.const(f"{prefix}_gamma", array((channels,), 0.5, 1.5)),
            self.const(f"{prefix}_beta", array((channels,))),
            self.const(f"{prefix}_mean", array((channels,))),
            self.const(f"{prefix}_var", array((channels,), 0.2, 2.0)),
        ]

    def bn(self, x, output, channels, params=None):
        params = params or self.bn_params(output, channels)
        return self.node("BatchNormalization", [x, *params], output, epsilon=1e-3)

    def model(self, inputs, outputs, extra_inputs=(), opset=17, functions=()):
        """``inputs``: (name, shape) pairs; ``outputs``: names (of the first input's
        rank) or (name, rank) pairs."""
        rank = len(inputs[0][1])
        outputs = [(o, rank) if isinstance(o, str) else o for o in outputs]
        graph = helper.make_graph(
            self.nodes,
            "g",
            [
                *[helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                *extra_inputs,
            ],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r) for n, r in outputs],
            self.initializers,
        )
        opsets = [helper.make_opsetid("", opset)]
        opsets += [helper.make_opsetid(domain, 1) for domain in {f.domain for f in functions}]
        proto = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
        proto.ir_version = 10
        onnx.checker.check_model(proto)
        return proto


def run(proto, feed):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)


def feed_for(proto):
    return {
        value.name: RNG.normal(size=[d.dim_value for d in value.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for value in proto.graph.input
    }


def assert_same_answers(original, folded):
    """The folded model answers like the original, within 1e-5 of each output's scale."""
    onnx.checker.check_model(folded)
    feed = feed_for(original)
    for want, got in zip(run(original, feed), run(folded, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def op_count(proto, op):
    return sum(node.op_type == op for node in proto.graph.node)
