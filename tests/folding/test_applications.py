"""Real architectures from keras.applications (random weights: nothing is downloaded).

A representative subset, at small input sizes, one per kind of layer the families
use; ``bench/applications.py`` runs every family and writes docs/applications.md.
"""

import keras
import pytest

from folding.options import FoldOptions, VerifyOptions
from folding.pipeline import fold_to_directory
from tests import zoo

A = keras.applications

FAMILIES = {
    # family: (builder, folded, kept)
    "MobileNetV2": (
        lambda: A.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35),
        52,
        0,
    ),
    "EfficientNetB0": (lambda: A.EfficientNetB0(weights=None, input_shape=(64, 64, 3)), 49, 0),
    # ZeroPadding2D -> MaxPooling2D on raw conv outputs; pre-activation BNs kept
    "ResNet50V2": (lambda: A.ResNet50V2(weights=None, input_shape=(32, 32, 3)), 32, 17),
    # gelu, LayerNormalization, LayerScale, nested Sequential blocks
    "ConvNeXtTiny": (lambda: A.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3)), 0, 0),
    # SeparableConv2D
    "Xception": (lambda: A.Xception(weights=None, input_shape=(71, 71, 3)), 40, 0),
    # Rescaling input, hard_silu, squeeze-and-excite Multiply
    "MobileNetV3Small": (lambda: A.MobileNetV3Small(weights=None, input_shape=(32, 32, 3)), 34, 0),
    # Cropping2D, AveragePooling2D with "same" padding, 5 inputs to a Concatenate
    "NASNetMobile": (lambda: A.NASNetMobile(weights=None, input_shape=(32, 32, 3)), 192, 0),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_application_folds_exports_and_verifies(family, tmp_path):
    build, folded, kept = FAMILIES[family]
    model = zoo.randomize_batch_norms(build(), seed=1)
    keras_batch_norms = sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in zoo.all_layers(model)
    )
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert (len(report.folded), len(report.not_folded)) == (folded, kept)
    assert all(entry.reason for entry in report.not_folded)
    assert report.verification.passed, report.summary()
    assert report.onnx["unfolded"].op_counts.get("BatchNormalization", 0) == keras_batch_norms
    assert report.onnx["folded"].nodes < report.onnx["unfolded"].nodes or keras_batch_norms == 0


def test_densenet_keeps_pre_activation_batch_norms_and_says_why(tmp_path):
    model = zoo.randomize_batch_norms(
        keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3)), seed=1
    )
    report = fold_to_directory(model, tmp_path, FoldOptions(VerifyOptions(samples=4)))
    assert report.verification.passed
    assert len(report.folded) == 59 and len(report.not_folded) == 62
    assert all("nor forward" in entry.reason for entry in report.not_folded)
