"""Real architectures from keras.applications (random weights: nothing is downloaded)."""

import keras
import pytest

from folding.pipeline import fold_to_directory
from tests import zoo


@pytest.mark.parametrize(
    ("build", "folded", "removed"),
    [
        (
            lambda: keras.applications.MobileNetV2(
                weights=None, input_shape=(64, 64, 3), alpha=0.35
            ),
            52,
            0,
        ),
        (lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3)), 49, 10),
    ],
    ids=["MobileNetV2", "EfficientNetB0"],
)
def test_application_folds_completely(build, folded, removed, tmp_path):
    model = zoo.randomize_batch_norms(build(), seed=1)
    report = fold_to_directory(model, tmp_path, samples=8)
    assert len(report.folded) == folded
    assert report.not_folded == []
    assert len(report.removed) == removed
    assert report.verification.passed
    assert report.onnx["folded"].nodes < report.onnx["unfolded"].nodes


def test_densenet_keeps_pre_activation_batch_norms_and_says_why(tmp_path):
    model = zoo.randomize_batch_norms(
        keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3)), seed=1
    )
    report = fold_to_directory(model, tmp_path, samples=4)
    assert report.verification.passed
    assert len(report.folded) == 59 and len(report.not_folded) == 62
    assert all("nor forward" in entry.reason for entry in report.not_folded)
