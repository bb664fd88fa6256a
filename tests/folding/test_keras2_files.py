"""Keras 2 (tf_keras) ``.h5`` and ``.keras`` files folded through ``foldserve fold``: each
folded ONNX answers like tf_keras itself, and every BN is accounted for."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests import keras2_models as build
from tests.folding.test_cli import assert_failed_cleanly, fold

SLOW = pytest.mark.slow  # the same translations again: the slow tier (make test-slow)
MODELS = [
    ("mobilenet_like", "h5", 3),
    ("resnet_like", "h5", 3),
    ("article_mlp", "h5", 2),
    pytest.param("channels_first_bn", "h5", 1, marks=SLOW),
    pytest.param("mobilenet_like", "keras", 3, marks=SLOW),
    ("resnet_like", "keras", 3),
    ("assorted_layers", "h5", 3),
    pytest.param("assorted_layers", "keras", 3, marks=SLOW),
    ("tf_ops", "h5", 2),
    ("tf_ops", "keras", 2),
    ("application_layers", "h5", 2),
    pytest.param("application_layers", "keras", 2, marks=SLOW),
]


def fold_and_compare(model, path, out, batch_norms):
    inputs, expected = build.answers(model)
    result = fold(path, "-o", out, "--samples", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert "from a Keras 2" in report["loader"] and "translated" in report["loader"]
    assert "loaded by keras" in result.stdout
    assert report["verification"]["passed"]
    assert len(report["folded"]) + len(report["not_folded"]) == batch_norms
    assert len(report["folded"]) == batch_norms
    session = ort.InferenceSession(out / "model.onnx", providers=["CPUExecutionProvider"])
    (answer,) = session.run(None, {session.get_inputs()[0].name: inputs})
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)
    return report


@pytest.mark.parametrize(("builder", "suffix", "batch_norms"), MODELS)
def test_keras2_file_folds_and_answers_like_tf_keras(tmp_path, builder, suffix, batch_norms):
    model = build.randomise_batch_norms(getattr(build, builder)())
    path = build.save(model, tmp_path / f"{builder}.{suffix}")
    report = fold_and_compare(model, path, tmp_path / "out", batch_norms)
    if builder == "resnet_like":  # names with '/' are renamed, the report uses the new ones
        assert "renamed" in report["loader"]
        assert {entry["bn"] for entry in report["folded"]} == {
            "stem_bn",
            "block1_bn1",
            "block1_bn2",
        }
    if builder == "mobilenet_like":
        assert "DepthwiseConv2D groups=1 left out" in report["loader"]
    if builder in {"tf_ops", "application_layers"}:  # traced into: no layer left to tf2onnx
        assert report["exporter"] == "direct"
        assert not [warning for warning in report["warnings"] if "exported alone" in warning]
    if builder == "tf_ops":
        assert "TensorFlow call layer (TFOpLambda) computed with keras.ops" in report["loader"]


@pytest.mark.slow
def test_tf_keras_mobilenet_v2_h5_folds(tmp_path):
    model = build.randomise_batch_norms(build.mobilenet_v2())
    path = build.save(model, tmp_path / "mobilenet_v2.h5")
    fold_and_compare(model, path, tmp_path / "out", 52)


def test_keras2_unknown_tensorflow_function_is_refused_naming_it(tmp_path):
    path = build.save(build.unknown_tf_function(), tmp_path / "fft.h5")
    out = tmp_path / "out"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "calls tf.math.cumsum")


def test_keras2_renorm_is_refused_naming_the_layer(tmp_path):
    path = build.save(build.channels_first_bn(renorm=True), tmp_path / "renorm.h5")
    out = tmp_path / "out"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "uses the Keras 2 option renorm=True")


def test_keras2_hard_sigmoid_is_refused_naming_the_difference(tmp_path):
    path = build.save(build.hard_sigmoid_model(), tmp_path / "hard.h5")
    out = tmp_path / "out"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "uses the activation 'hard_sigmoid'")
    assert "clip(0.2 x + 0.5, 0, 1)" in result.stderr


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_keras2_lambda_is_refused_unrun(tmp_path, suffix):
    path = build.save(build.lambda_model(), tmp_path / f"lambda.{suffix}")
    out = tmp_path / "out"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "Lambda layer 'doubler'")
