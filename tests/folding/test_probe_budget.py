"""How many probe rows a SavedModel is verified on: as many as the same network gets
as a Keras model (fewer for a costly one), from the multiply-accumulates of its ONNX
graph, which shape inference reads off a copy without the weights."""

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from folding.keras_graph.graph import trace
from folding.options import FoldOptions, VerifyOptions
from folding.sources import open_source
from folding.verify.onnx_cost import multiply_accumulates
from folding.verify.probes import PROBE_BUDGET_MACS, sample_count, samples_within_budget


def costly_convnet():
    """0.3 GMACs a row in 20 K weights: a 64-row verification would be 19 GMACs."""
    inputs = keras.Input((64, 64, 64), name="image")
    x = keras.layers.Conv2D(128, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_a_costly_saved_model_gets_the_rows_its_keras_model_gets(tmp_path):
    model = costly_convnet()
    model.export(str(tmp_path / "saved"), verbose=False)
    expected = sample_count(trace(model), VerifyOptions().samples)
    macs = 64 * 64 * 3 * 3 * 64 * 128 + 128 * 4
    assert expected == int(PROBE_BUDGET_MACS // macs) == 33  # fewer than the 64 asked for

    source = open_source(tmp_path / "saved", FoldOptions())
    probes, described = source.probes(VerifyOptions())

    assert multiply_accumulates(source.model) == macs
    assert [probe.shape for probe in probes] == [(expected, 64, 64, 64)]
    assert described == "random"


def test_a_small_saved_model_keeps_the_rows_asked_for(tmp_path):
    inputs = keras.Input((6,), name="features")
    x = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs))
    keras.Model(inputs, keras.layers.Dense(2)(x)).export(str(tmp_path / "saved"), verbose=False)

    source = open_source(tmp_path / "saved", FoldOptions())

    assert source.probes(VerifyOptions(samples=16))[0][0].shape == (16, 6)
    assert source.probes(VerifyOptions())[0][0].shape == (64, 6)


def onnx_model(nodes, initializers, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_onnx_macs_of_conv_reshape_and_matmul():
    """Conv 3x3 (2->4) on an open-sized image (64 x 64 then), a Reshape whose target is a
    small constant, a MatMul by a weight: each counted at its output's positions."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    matrix = numpy_helper.from_array(rng.standard_normal((4 * 64 * 64, 5)).astype(np.float32), "m")
    model = onnx_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Reshape", ["c", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "m"], ["y"]),
        ],
        [weight, shape, matrix],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
    )
    onnx.checker.check_model(model)

    conv = 64 * 64 * (4 * 2 * 3 * 3)
    assert multiply_accumulates(model) == conv + 4 * 64 * 64 * 5


def test_budget_never_goes_below_two_rows():
    assert samples_within_budget(10**12, 64) == 2
    assert samples_within_budget(10**12, 1) == 1
    assert samples_within_budget(0, 64) == 64
