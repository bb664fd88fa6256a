"""The general exporter (tf2onnx) as the fold command uses it: every BN still its own
ops in unfolded.onnx, Keras 3 grouped convolutions (an XLA function on the TF
backend) and exact gelu (Erfc) converted, answers checked with ONNX Runtime."""

import json
from collections import Counter

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests import zoo
from tests.folding.test_cli import fold


def op_counts(path):
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def answers(path, inputs):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def grouped_convnet():
    inputs = keras.Input((12, 12, 4), name="image")
    x = keras.layers.Conv2D(8, 3, groups=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(8, 3, groups=4, padding="same")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def exact_gelu_mlp():
    inputs = keras.Input((10,), name="features")
    x = keras.layers.BatchNormalization()(keras.layers.Dense(16)(inputs))
    x = keras.layers.Activation(lambda t: keras.activations.gelu(t, approximate=False))(x)
    x = keras.layers.BatchNormalization()(keras.layers.Dense(8)(x))
    outputs = keras.layers.Dense(2)(keras.layers.Activation("gelu")(x))
    return keras.Model(inputs, outputs)


def exact_gelu_mlp_serialisable():
    inputs = keras.Input((10,), name="features")
    x = keras.layers.BatchNormalization()(keras.layers.Dense(16)(inputs))
    x = keras.layers.Activation("gelu")(x)  # keras.activations.gelu: approximate=False
    x = keras.layers.BatchNormalization()(keras.layers.Dense(8)(x))
    outputs = keras.layers.Dense(2)(keras.layers.Activation("gelu")(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    ("build", "shape", "batch_norms"),
    [
        (grouped_convnet, (12, 12, 4), 3),
        # exact gelu's Erf also folds on the SavedModel path below, in the default run
        pytest.param(exact_gelu_mlp_serialisable, (10,), 2, marks=pytest.mark.slow),
    ],
)
def test_the_general_exporter_keeps_every_bn_in_unfolded_onnx(tmp_path, build, shape, batch_norms):
    model = zoo.randomize_batch_norms(build(), seed=4)
    path = tmp_path / "model.keras"
    model.save(path)
    out = tmp_path / "out"
    result = fold(path, "-o", out, "--exporter", "tf2onnx", "--samples", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exporter"] == "tf2onnx"
    assert report["verification"]["passed"]
    assert len(report["folded"]) == batch_norms
    assert report["warnings"] == []
    unfolded, folded = op_counts(out / "unfolded.onnx"), op_counts(out / "model.onnx")
    assert "StatefulPartitionedCall" not in unfolded and "Erfc" not in unfolded
    # each BN is one Mul (+ Add) of its own in unfolded.onnx, and gone from model.onnx
    assert unfolded["BatchNormalization"] + unfolded["Mul"] - folded["Mul"] == batch_norms
    assert folded["BatchNormalization"] == 0

    inputs = np.random.default_rng(5).standard_normal((4, *shape)).astype("float32")
    expected = np.asarray(model(inputs, training=False))
    for file in ("unfolded.onnx", "model.onnx"):
        np.testing.assert_allclose(answers(out / file, inputs), expected, rtol=1e-4, atol=1e-5)


def test_grouped_convolutions_go_through_the_direct_exporter_by_default(tmp_path):
    model = zoo.randomize_batch_norms(grouped_convnet(), seed=4)
    model.save(tmp_path / "grouped.keras")
    out = tmp_path / "out"
    result = fold(tmp_path / "grouped.keras", "-o", out, "--samples", "8")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "report.json").read_text())["exporter"] == "direct"


def test_an_unknown_exporter_is_refused(tmp_path):
    result = fold(tmp_path / "x.keras", "-o", tmp_path / "out", "--exporter", "pytorch")
    assert result.returncode == 2 and "invalid choice: 'pytorch'" in result.stderr


def test_the_general_exporter_in_process_keeps_bns_of_a_python_gelu(tmp_path):
    """A model that cannot be saved (a Python lambda) folded in process."""
    from folding.options import FoldOptions, VerifyOptions
    from folding.pipeline import fold_to_directory

    model = zoo.randomize_batch_norms(exact_gelu_mlp(), seed=4)
    report = fold_to_directory(
        model, tmp_path, FoldOptions(VerifyOptions(samples=16), exporter="tf2onnx")
    )
    assert report.exporter == "tf2onnx" and report.verification.passed
    unfolded, folded = op_counts(tmp_path / "unfolded.onnx"), op_counts(tmp_path / "model.onnx")
    assert unfolded["Mul"] - folded["Mul"] == 2 and "Erf" in unfolded


def test_a_saved_model_with_exact_gelu_folds(tmp_path):
    """Exact gelu is Erfc in a SavedModel's graph: it was refused as having no ONNX form."""
    from tests import saved_models

    model = zoo.randomize_batch_norms(exact_gelu_mlp_serialisable(), seed=4)
    exported = tmp_path / "gelu_saved_model"
    model.export(str(exported), format="tf_saved_model", verbose=False)
    out = tmp_path / "out"
    result = fold(exported, "-o", out, "--samples", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"] and len(report["folded"]) == 2
    session = ort.InferenceSession(out / "model.onnx", providers=["CPUExecutionProvider"])
    inputs = np.random.default_rng(6).standard_normal((4, 10)).astype("float32")
    (answer,) = session.run(None, {session.get_inputs()[0].name: inputs})
    (expected,) = saved_models.signature_answers(exported, {"features": inputs}).values()
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)


def test_the_general_exporter_converts_once_and_reports_the_onnx_fold_in_keras_names(tmp_path):
    """model.onnx is unfolded.onnx folded on its ONNX graph: a BN inside a layer the
    Keras tracer cannot enter folds there too, into that layer's Conv2D; a BN no rule
    folds keeps the Keras reason; every BN of the model is listed once."""
    from folding.options import FoldOptions, VerifyOptions
    from folding.pipeline import fold_to_directory
    from tests.folding.test_layers import Untraceable

    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.BatchNormalization(name="outer_bn")(
        keras.layers.Conv2D(4, 3, name="stem")(inputs)
    )
    x = Untraceable(name="opaque")(x)
    y = keras.layers.BatchNormalization(name="after_relu")(keras.layers.ReLU()(x))
    x = keras.layers.Add()([x, y])
    model = zoo.randomize_batch_norms(keras.Model(inputs, keras.layers.Conv2D(2, 1)(x)), seed=5)
    report = fold_to_directory(
        model, tmp_path, FoldOptions(VerifyOptions(samples=16), exporter="tf2onnx")
    )
    assert report.exporter == "tf2onnx" and report.verification.passed, report.summary()
    folded = {entry.bn: (entry.into, entry.into_class) for entry in report.folded}
    assert folded == {"outer_bn": ("stem", "Conv2D"), "opaque/bn": ("conv", "Conv2D")}
    (kept,) = report.not_folded
    assert kept.bn == "after_relu" and "ReLU" in kept.reason, kept.reason
    assert kept.stats is not None and kept.stats.channels == 4
    unfolded, folded_ops = op_counts(tmp_path / "unfolded.onnx"), op_counts(tmp_path / "model.onnx")
    assert unfolded["Mul"] == 3 and folded_ops["Mul"] == 1
    inputs = np.random.default_rng(7).standard_normal((3, 6, 6, 3)).astype("float32")
    expected = np.asarray(model(inputs, training=False))
    answer = answers(str(tmp_path / "model.onnx"), inputs)
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)
