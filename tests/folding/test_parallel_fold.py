"""A BatchNormalization added to a convolution of its own input (RepVGG's and MobileOne's
identity branch) folds into that convolution; the folded ONNX answers like Keras."""

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from keras import layers, ops

from folding.pipeline import fold_to_directory
from tests import zoo


class SkipSum(layers.Layer):
    """``conv(x) + bn(x)`` written with ``+`` inside a custom layer (traced into)."""

    def __init__(self, channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(channels, 3, padding="same")
        self.skip = layers.BatchNormalization()

    def call(self, x):
        return self.conv(x) + self.skip(x)


def _stem(inputs, channels=6):
    return layers.ReLU()(layers.Conv2D(channels, 3, padding="same")(inputs))


def _repvgg_block():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    kxk = layers.BatchNormalization()(layers.Conv2D(6, 3, padding="same", use_bias=False)(x))
    scale = layers.BatchNormalization()(layers.Conv2D(6, 1, use_bias=False)(x))
    x = layers.ReLU()(layers.Add()([kxk, scale, layers.BatchNormalization()(x)]))
    return keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))


def _padded_valid():
    """kimm pads, then convolves "valid"."""
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    conv = layers.Conv2D(6, 3, padding="valid")(layers.ZeroPadding2D(1)(x))
    return keras.Model(inputs, layers.Add()([conv, layers.BatchNormalization()(x)]))


def _operator_sum():
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, SkipSum(6)(_stem(inputs)))


def _depthwise():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    conv = layers.DepthwiseConv2D(3, padding="same")(x)
    return keras.Model(inputs, ops.add(layers.BatchNormalization()(x), conv))


def _grouped():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    conv = layers.Conv2D(6, 3, padding="same", groups=3, use_bias=False)(x)
    return keras.Model(inputs, layers.Add()([conv, layers.BatchNormalization()(x)]))


@pytest.mark.parametrize(
    ("build", "parallel", "backward"),
    [
        (_repvgg_block, 1, 2),
        (_padded_valid, 1, 0),
        (_operator_sum, 1, 0),
        (_depthwise, 1, 0),
        (_grouped, 1, 0),
    ],
    ids=["add-layer", "padded-valid", "operator", "depthwise", "grouped"],
)
def test_identity_branch_folds_into_the_convolution_beside_it(build, parallel, backward, tmp_path):
    model = zoo.randomize_batch_norms(build(), seed=5)
    report = fold_to_directory(model, tmp_path)
    directions = [entry.direction for entry in report.folded]
    assert report.not_folded == []
    assert directions.count("parallel") == parallel
    assert directions.count("backward") == backward
    assert report.exporter == "direct"
    assert report.verification.passed, report.summary()
    session = ort.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype("float32")
    (answer,) = session.run(None, {session.get_inputs()[0].name: rows})
    expected = np.asarray(model(rows, training=False))
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)
    kinds = [node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node]
    assert "BatchNormalization" not in kinds


def _dilated():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    conv = layers.Conv2D(6, 3, padding="same", dilation_rate=2)(x)
    return keras.Model(inputs, layers.Add()([conv, layers.BatchNormalization(name="skip")(x)]))


def _conv_read_twice():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs)
    conv = layers.Conv2D(6, 3, padding="same")(x)
    total = layers.Add()([conv, layers.BatchNormalization(name="skip")(x)])
    return keras.Model(inputs, [total, layers.ReLU()(conv)])


@pytest.mark.parametrize(
    ("build", "why"),
    [(_dilated, "has a stride or a dilation"), (_conv_read_twice, "feeds 2 layers")],
    ids=["dilated", "conv-read-twice"],
)
def test_identity_branch_that_cannot_fold_is_kept_saying_why(build, why, tmp_path):
    report = fold_to_directory(zoo.randomize_batch_norms(build(), seed=5), tmp_path)
    (kept,) = report.not_folded
    assert kept.bn == "skip"
    assert "nor into a convolution beside it" in kept.reason
    assert why in kept.reason
    assert report.verification.passed
