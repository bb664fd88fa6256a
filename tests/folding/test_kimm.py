"""Keras 3 model code from another model collection: kimm (Keras Image Models).

kimm's models are Functional models built from keras layers, ``keras.ops`` calls and a
few custom layers of its own; some (RepVGG, MobileOne, GhostNetV3) in their training form
carry several BatchNormalization branches inside one custom layer. Each is built with
random weights (``weights=None``: nothing is downloaded) at a small input size, its BN
statistics measured on random images (arbitrary ones saturate these deep networks, and
verification is then inconclusive), folded, exported and verified. The whole collection
is swept by ``bench/third_party.py --only kimm --kimm all``; the hand-made models below
are the patterns the kimm models showed, kept here without kimm.
"""

import keras
import numpy as np
import pytest
from keras import layers

from folding.pipeline import fold_to_directory
from tests import zoo
from tests.folding.test_zoo import batch_norm_count

# kimm says so for a model it has no weights for, also when asked for none (weights=None)
pytestmark = pytest.mark.filterwarnings("ignore:.*doesn't have pretrained weights:UserWarning")


def kimm_model(name: str, size: int, **settings) -> keras.Model:
    models = pytest.importorskip("kimm").models
    model = getattr(models, name)(
        input_shape=(size, size, 3),
        weights=None,
        classes=10,
        classifier_activation=None,
        **settings,
    )
    images = np.random.default_rng(7).uniform(0, 255, (8, size, size, 3)).astype("float32")
    return zoo.calibrate_batch_norms(model, images, seed=7)


def assert_folds_directly(model: keras.Model, tmp_path) -> object:
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert report.warnings == []  # no layer went through the general exporter
    assert len(report.folded) + len(report.not_folded) == batch_norm_count(model)
    assert all(entry.reason for entry in report.not_folded)
    assert report.verification.passed, report.summary()
    return report


# (model, input size, BNs folded, BNs kept)
KIMM_CASES = [
    ("LCNet035", 32, 27, 0),  # depthwise-separable, hard-swish, SE
    ("MobileNetV3W050Small", 32, 34, 0),
    # training form: 3 BN branches in one custom layer; the 17 identity ("skip") BNs fold
    # into the 1x1 convolution they are added to
    ("RepVGGA0", 32, 61, 0),
    ("VisionTransformerTiny32", 64, 0, 0),  # kimm's PositionEmbedding (class token)
]


@pytest.mark.parametrize(
    ("name", "size", "folded", "kept"), KIMM_CASES, ids=[case[0] for case in KIMM_CASES]
)
def test_kimm_models_fold_directly_with_every_batch_norm_accounted_for(
    name, size, folded, kept, tmp_path
):
    model = kimm_model(name, size)
    report = assert_folds_directly(model, tmp_path)
    assert (len(report.folded), len(report.not_folded)) == (folded, kept)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("GhostNetV2W100", 64),
        ("MobileOneS0", 64),
        ("GhostNetV3W050", 64),
        ("HGNetV2B0", 64),
        ("EfficientNetV2B0", 64),
        ("MobileViTXXS", 128),  # at 64 its last attention has one token (Keras warns)
    ],
)
def test_more_kimm_families_fold_directly(name, size, tmp_path):
    """GhostNetV2: Resizing layers (its attention); MobileOne, GhostNetV3: training-form
    branches with a BN each inside one custom layer, the identity ones folded beside."""
    report = assert_folds_directly(kimm_model(name, size), tmp_path)
    if name in {"MobileOneS0", "GhostNetV3W050"}:
        assert report.not_folded == []
        assert any(entry.direction == "parallel" for entry in report.folded)


# -- the patterns, without kimm -----------------------------------------------------------


class PaddedBranches(layers.Layer):
    """Like kimm's ``ReparameterizableConv2D`` with a stride: a 3x3 branch on the
    zero-padded input and a 1x1 branch on the input itself, each a ``Sequential`` of
    Conv2D and BatchNormalization, both built on the *padded* shape. Keras runs the
    1x1 one on the unpadded input (a Sequential does not check shapes on real tensors);
    called on symbolic tensors it refuses, so tracing into the layer must allow it."""

    def __init__(self, filters: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pad = layers.ZeroPadding2D(1)
        self.kxk = keras.Sequential(
            [layers.Conv2D(filters, 3, 2, use_bias=False), layers.BatchNormalization()]
        )
        self.scale = keras.Sequential(
            [layers.Conv2D(filters, 1, 2, use_bias=False), layers.BatchNormalization()]
        )

    def build(self, input_shape) -> None:
        padded = self.pad.compute_output_shape(input_shape)
        self.kxk.build(padded)
        self.scale.build(padded)

    def call(self, x):
        return layers.Add()([self.kxk(self.pad(x)), self.scale(x)])


def test_custom_layer_running_a_sequential_on_another_shape_is_traced_into(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = PaddedBranches(8)(inputs)
    x = layers.Conv2D(4, 3, padding="same")(x)
    model = zoo.randomize_batch_norms(keras.Model(inputs, x), seed=3)
    report = assert_folds_directly(model, tmp_path)
    assert len(report.folded) == 2
    assert report.verification.max_rel_error < 1e-4


def test_resizing_layers_export_directly(tmp_path):
    inputs = keras.Input((12, 10, 3))
    x = layers.Conv2D(6, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    up = layers.Resizing(24, 15, interpolation="nearest")(x)
    down = layers.Resizing(7, 5, interpolation="bilinear")(x)
    x = layers.Concatenate()([layers.Resizing(7, 5)(up), down])
    model = zoo.randomize_batch_norms(keras.Model(inputs, x), seed=5)
    report = assert_folds_directly(model, tmp_path)
    assert report.verification.max_rel_error < 1e-4
