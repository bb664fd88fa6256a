"""What the general exporter (tf2onnx) does to be quick, checked for what it must keep:
the model it traces answers as the Keras model does (the reference then comes from it);
a frozen weight read through Identity ops, renamed rather than copied where one read is
all it has, leaves the same graph as the copy does; the weights handed to tf2onnx beside
the graph (not through TensorFlow's import) are the model's own."""

import keras
import numpy as np
import onnx
import tensorflow as tf
from onnx import numpy_helper

from folding.export.exporters import export_onnx
from folding.export.pair import export_pair
from folding.export.tf2onnx_convert import fold_constants
from folding.keras_graph.fold import fold_model
from folding.keras_graph.graph import trace
from folding.specs import InputSpec
from tests import zoo


def convnet():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    return zoo.randomize_batch_norms(keras.Model(inputs, outputs), seed=3)


def test_the_traced_model_answers_as_the_keras_model():
    model = convnet()
    result = fold_model(model)
    heard = []

    exported = export_pair(result, trace(model), 17, "tf2onnx", on_traced=heard.append)

    assert exported.exporter == "tf2onnx" and len(heard) == 1
    rows = np.random.default_rng(0).standard_normal((5, 8, 8, 3)).astype(np.float32)
    (graph_answer,) = heard[0]([rows])
    eager_answer = np.asarray(model(rows, training=False))
    assert graph_answer.shape == (5, 4)
    np.testing.assert_allclose(graph_answer, eager_answer, rtol=1e-5, atol=1e-6)


def test_the_direct_exporter_traces_nothing():
    model = convnet()
    heard = []

    exported = export_pair(fold_model(model), trace(model), 17, "auto", on_traced=heard.append)

    assert exported.exporter == "direct" and heard == []


def frozen_graph(reads_of_weight):
    """A GraphDef: a weight Const read by ``reads_of_weight`` Identity ops, each feeding
    a MatMul of the input."""
    graph_def = tf.compat.v1.GraphDef()
    x = graph_def.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = tf.float32.as_datatype_enum
    weight = graph_def.node.add(name="weight", op="Const")
    weight.attr["dtype"].type = tf.float32.as_datatype_enum
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    weight.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(values))
    outputs = []
    for index in range(reads_of_weight):
        read = graph_def.node.add(name=f"read_{index}", op="Identity", input=["weight"])
        read.attr["T"].type = tf.float32.as_datatype_enum
        product = graph_def.node.add(name=f"out_{index}", op="MatMul", input=["x", read.name])
        product.attr["T"].type = tf.float32.as_datatype_enum
        outputs.append(f"{product.name}:0")
    return graph_def, values, outputs


def test_a_weight_read_once_takes_the_name_of_its_read():
    graph_def, values, outputs = frozen_graph(1)

    folded = fold_constants(graph_def, outputs)

    nodes = {node.name: node for node in folded.node}
    assert sorted(nodes) == ["out_0", "read_0", "x"]
    assert nodes["read_0"].op == "Const" and list(nodes["out_0"].input) == ["x", "read_0"]
    np.testing.assert_array_equal(tf.make_ndarray(nodes["read_0"].attr["value"].tensor), values)


def test_a_weight_read_twice_is_given_to_each_read():
    graph_def, values, outputs = frozen_graph(2)

    folded = fold_constants(graph_def, outputs)

    nodes = {node.name: node for node in folded.node}
    assert sorted(nodes) == ["out_0", "out_1", "read_0", "read_1", "x"]
    for read in ("read_0", "read_1"):
        assert nodes[read].op == "Const"
        np.testing.assert_array_equal(tf.make_ndarray(nodes[read].attr["value"].tensor), values)


def test_the_weights_tf2onnx_writes_are_the_models():
    inputs = keras.Input((32,), name="features")
    dense = keras.layers.Dense(64)  # 32 x 64 float32: 8 KB, over the 1000 bytes kept inline
    model = keras.Model(inputs, dense(inputs))
    kernel, bias = (np.asarray(weight) for weight in dense.weights)

    specs = [InputSpec(0, "features", (None, 32), "float32")]

    proto = export_onnx(lambda tensors: [model(tensors[0])], specs, ["out"], 17)

    arrays = [numpy_helper.to_array(tensor) for tensor in proto.graph.initializer]
    assert any(array.shape == kernel.shape and np.array_equal(array, kernel) for array in arrays)
    assert any(array.shape == bias.shape and np.array_equal(array, bias) for array in arrays)
    onnx.checker.check_model(proto)


def test_the_keras_fallback_reference_is_ready_when_verifying_starts():
    from folding.options import FoldOptions
    from folding.sources.keras.source import KerasSource
    from folding.specs import no_stages

    model = convnet()
    options = FoldOptions(exporter="tf2onnx")
    source = KerasSource(model, options)

    source.fold(options, no_stages)

    probes, _ = source.probes(options.verify)
    early = source.early_reference(probes)
    assert early is not None
    eager = np.asarray(model(probes[0], training=False))
    np.testing.assert_allclose(early[0], eager, rtol=1e-5, atol=1e-6)


def test_a_saved_models_reference_is_computed_beside_its_fold(tmp_path):
    from folding.options import FoldOptions
    from folding.sources.saved_model.source import SavedModelSource, load_saved_model
    from folding.specs import no_stages

    convnet().export(str(tmp_path / "saved"), verbose=False)
    options = FoldOptions()
    serving = load_saved_model(tmp_path / "saved")
    source = SavedModelSource(serving, tmp_path / "saved", "saved", options.opset)

    folded = source.fold(options, no_stages)

    probes, _ = source.probes(options.verify)
    early = source.early_reference(probes)
    assert early is not None and len(folded.folded) == 1
    np.testing.assert_allclose(early[0], serving(probes)[0], rtol=1e-5, atol=1e-6)
