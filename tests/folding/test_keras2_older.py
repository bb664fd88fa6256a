""".h5 files as older Keras 2 versions and the Keras 2 model libraries wrote them, folded
through ``foldserve fold``: each folded ONNX answers like tf_keras did for the model
before its config was rewritten, and every BN is folded or kept with a reason."""

import json

import h5py
import numpy as np
import onnxruntime as ort
import pytest

from tests import keras2_models as build
from tests.folding.test_cli import assert_failed_cleanly, fold

SLOW = pytest.mark.slow
OLDER = [  # builder, the Keras that wrote the file, BNs, of which folded
    ("legacy_features", "2.2.4", 4, 3),
    ("merge_sequential", "2.0.8", 2, 2),
    ("mixed_precision", "tf-1.15", 1, 1),
    pytest.param("legacy_features", "tf-1.15", 4, 3, marks=SLOW),
    pytest.param("legacy_features", "2.0.8", 4, 3, marks=SLOW),
    pytest.param("time_distributed", "2.2.4", 1, 0, marks=SLOW),
    pytest.param("mobilenet_like", "tf-1.15", 3, 3, marks=SLOW),
    pytest.param("article_mlp", "2.0.8", 2, 2, marks=SLOW),
    pytest.param("mixed_precision", "2.2.4", 1, 1, marks=SLOW),
]


def fold_file(path, out, inputs, expected, batch_norms, folded, *options, atol=1e-5):
    result = fold(path, "-o", out, "--samples", "16", *options)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"], report["verification"]
    assert len(report["folded"]) + len(report["not_folded"]) == batch_norms
    assert len(report["folded"]) == folded
    assert all(entry["reason"] for entry in report["not_folded"])
    session = ort.InferenceSession(out / "model.onnx", providers=["CPUExecutionProvider"])
    (answer,) = session.run(None, {session.get_inputs()[0].name: inputs})
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=atol)
    return report


@pytest.mark.parametrize(("builder", "era", "batch_norms", "folded"), OLDER)
def test_file_of_an_older_keras_folds_and_answers_like_tf_keras(
    tmp_path, builder, era, batch_norms, folded
):
    model = build.randomise_batch_norms(getattr(build, builder)())
    inputs, expected = build.answers(model)
    path = build.rewrite_as_older_keras(build.save(model, tmp_path / f"{builder}.h5"), era)
    atol = 2e-3 if builder == "mixed_precision" else 1e-5  # float16 arithmetic
    report = fold_file(path, tmp_path / "out", inputs, expected, batch_norms, folded, atol=atol)
    written = "2.2.4-tf" if era == "tf-1.15" else era
    assert f"from a Keras {written} .h5 file" in report["loader"]
    if era == "tf-1.15":
        assert "BatchNormalization fused left out" in report["loader"]
    if era == "2.0.8" and builder != "article_mlp":
        assert "Keras 1 Merge layer written as" in report["loader"]
    if builder == "mixed_precision":
        assert "dtype policy mixed_float16 written as its name" in report["loader"]
    if builder == "time_distributed":  # called, per time step, as operations
        assert "whose call was traced as operations" in report["not_folded"][0]["reason"]


def test_library_lambdas_are_recognised_and_never_run(tmp_path):
    model = build.randomise_batch_norms(build.classifier_lambdas())
    inputs, expected = build.answers(model)
    path = build.library_lambdas(build.save(model, tmp_path / "seresnext.h5"))
    # the grouped convolution's BN folds into the convolutions its channel slices come from
    report = fold_file(path, tmp_path / "out", inputs, expected, 2, 2)
    assert "Lambda layer of classification_models recognised" in report["loader"]
    assert report["exporter"] == "direct"


def test_a_lambda_claiming_a_library_module_is_still_refused(tmp_path):
    path = build.library_lambdas(build.save(build.lambda_model(), tmp_path / "forged.h5"))
    out = tmp_path / "out"
    assert_failed_cleanly(fold(path, "-o", out), out, "Lambda layer 'doubler'")


def test_code_inside_a_library_lambdas_arguments_is_refused(tmp_path):
    path = build.library_lambdas(build.save(build.classifier_lambdas(), tmp_path / "c.h5"))
    with h5py.File(path, "r+") as handle:  # the function is the library's, an argument is not
        config = json.loads(handle.attrs["model_config"])
        lambdas = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda"]
        arguments = lambdas[0]["config"]["arguments"]
        key = next(iter(arguments))
        arguments[key] = {"class_name": "__lambda__", "config": {"code": "print(1)"}}
        handle.attrs["model_config"] = json.dumps(config)
    out = tmp_path / "out"
    assert_failed_cleanly(fold(path, "-o", out), out, "serialised Python code")


def test_a_library_lambda_with_captured_values_is_refused(tmp_path):
    path = build.library_lambdas(build.save(build.classifier_lambdas(), tmp_path / "c.h5"))
    with h5py.File(path, "r+") as handle:  # a closure: not the library's function
        config = json.loads(handle.attrs["model_config"])
        lambdas = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda"]
        lambdas[0]["config"]["function"][2] = ["captured"]
        handle.attrs["model_config"] = json.dumps(config)
    out = tmp_path / "out"
    assert_failed_cleanly(fold(path, "-o", out), out, "which carries Python code")


def test_library_dropout_and_a_tensor_passed_by_keyword_load(tmp_path):
    model = build.randomise_batch_norms(build.fixed_dropout())
    inputs, expected = build.answers(model)
    path = build.save(model, tmp_path / "efficientnet_like.h5")
    report = fold_file(path, tmp_path / "out", inputs, expected, 1, 1)
    assert "FixedDropout layer loaded as Dropout" in report["loader"]
    assert "tensor passed by keyword" in report["loader"]


def test_keras2_custom_class_is_found_by_name_in_the_operator_module(tmp_path):
    model = build.randomise_batch_norms(build.custom_gain())
    inputs, expected = build.answers(model)
    path = build.save(model, tmp_path / "gain.h5")
    out = tmp_path / "refused"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "uses the custom layer 'ChannelGain'")
    assert "must define a Keras 3 class of that name" in result.stderr
    options = ("--custom-objects", "tests.keras2_custom_layers")
    fold_file(path, tmp_path / "out", inputs, expected, 1, 1, *options)


def test_keras1_file_is_refused_saying_what_to_do(tmp_path):
    path = build.save(build.article_mlp(), tmp_path / "old.h5")
    with h5py.File(path, "r+") as handle:
        handle.attrs["keras_version"] = "1.2.2"
    out = tmp_path / "out"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "was written by Keras 1.2.2")
    assert "save it again" in result.stderr
