"""Model-library code folded end to end: keras-hub models (random weights, tiny configs)
and small hand-made Keras models with the same patterns, one per cause fixed.

The full keras-hub sweep (every image backbone, task and a few text backbones) is
``bench/third_party.py --only keras-hub``; here a bounded subset.
"""

import keras
import pytest
import tensorflow as tf
from keras import layers, ops

from folding.pipeline import fold_to_directory
from tests import zoo
from tests.folding.test_zoo import batch_norm_count


def _fold(model, tmp_path, seed=7):
    model = zoo.randomize_batch_norms(model, seed=seed)
    report = fold_to_directory(model, tmp_path)
    assert report.verification.passed, report.summary()
    assert len(report.folded) + len(report.not_folded) == batch_norm_count(model)
    assert all(entry.reason for entry in report.not_folded)
    return report


# -- keras-hub: one model per fixed cause, each exported directly -------------------------

HUB_DIRECT = [
    "depth_anything",  # its fusion layers upsample 5 -> 9 through tf2onnx
    "hgnetv2_light_lab",  # a weight left of an operator: self.scale * x + self.bias
    "mobilenetv5",  # training= passed to a call without it; a lambda activation
    "dinov3",  # a layer computing its outputs from its input's shape alone (RoPE tables)
]


@pytest.mark.parametrize("name", HUB_DIRECT)
def test_keras_hub_models_export_directly(name, tmp_path):
    pytest.importorskip("keras_hub")
    from tests.hub_zoo import HUB

    report = _fold(HUB[name](), tmp_path)
    assert report.exporter == "direct"
    if name not in ("dinov3", "depth_anything"):  # layers needing the batch size at run time
        assert report.warnings == []


def test_keras_hub_text_backbone_folds_with_ids_inside_its_vocabulary(tmp_path):
    pytest.importorskip("keras_hub")
    from tests.hub_zoo import HUB

    report = _fold(HUB["gpt2"](), tmp_path)
    assert report.exporter == "direct"
    assert "embedding ids" in report.verification.probes
    spliced = [warning for warning in report.warnings if "exported alone" in warning]
    # the causal mask and the position table need the sequence length at run time
    assert all("at keras_hub/" in warning for warning in spliced)


def test_keras_hub_siglip_vision_encoder_whose_embedding_misstates_its_shape(tmp_path):
    pytest.importorskip("keras_hub")
    from tests.hub_zoo import HUB

    report = _fold(HUB["siglip_vision"](), tmp_path)
    assert report.exporter == "direct"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # keras-hub's own, while building Swin
@pytest.mark.parametrize(
    "name", ["segformer", "swin", "bert", "retinanet detector", "deeplab_v3 segmenter", "basnet"]
)
def test_more_keras_hub_models(name, tmp_path):
    pytest.importorskip("keras_hub")
    from tests.hub_zoo import HUB

    report = _fold(HUB[name](), tmp_path)
    assert report.exporter == "direct"


# -- hand-made equivalents of each pattern ---------------------------------------------


class Lookup(layers.Layer):
    """An embedding written with ops: a variable indexed and taken from."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(20, 6), name="table")
        self.positions = self.add_weight(shape=(16, 6), name="positions")

    def call(self, ids):
        return ops.take(self.table, ids, axis=0) + self.positions[:5]


def test_ops_reading_a_variable_are_written_directly(tmp_path):
    ids = keras.Input((5,), dtype="int32")
    x = layers.Dense(4)(Lookup()(ids))
    x = layers.BatchNormalization()(x)
    report = _fold(keras.Model(ids, x), tmp_path)
    assert (report.exporter, report.warnings) == ("direct", [])
    assert len(report.folded) == 1
    assert report.verification.probes == "embedding ids"


class Scale(layers.Layer):
    """A learnable affine step written with the weight on the left: keras-hub's
    HGNetV2 LearnableAffineBlock."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, x):
        return self.scale * x + self.bias


class ConvBlock(layers.Layer):
    """Conv, BN and a sublayer whose call takes no ``training``, called with one."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(8, 3, padding="same")
        self.norm = layers.BatchNormalization()
        self.scale = Scale()

    def call(self, x, training=None):
        return self.scale(self.norm(self.conv(x), training=training), training=training)


def test_custom_blocks_are_traced_into_and_their_batch_norms_fold(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = ConvBlock()(inputs)
    x = ConvBlock()(x)
    report = _fold(keras.Model(inputs, x), tmp_path)
    assert (report.exporter, report.warnings) == ("direct", [])
    assert len(report.folded) == 2


def _quick_gelu(x):
    return x * ops.sigmoid(1.702 * x)


def test_activation_functions_of_other_libraries_are_written_as_their_ops(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, activation=_quick_gelu)(inputs)
    x = layers.Activation(lambda t: ops.gelu(t, approximate=True))(x)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2D(4, 1)(x)
    report = _fold(keras.Model(inputs, x), tmp_path)
    assert (report.exporter, report.warnings) == ("direct", [])
    assert len(report.folded) == 1


def test_resizing_layer_and_masked_softmax_are_written_directly(tmp_path):
    image = keras.Input((6, 6, 3), name="image")
    mask = keras.Input((4, 9), dtype="int32", name="mask")
    x = layers.Resizing(9, 9)(image)  # 6 -> 9: not a whole multiple
    x = layers.BatchNormalization()(layers.Conv2D(4, 3)(x))  # 7 x 7
    scores = layers.Reshape((4, 49))(layers.Permute((3, 1, 2))(x))
    scores = layers.Dense(9)(scores)
    attention = layers.Softmax()(scores, mask=mask)
    report = _fold(keras.Model([image, mask], attention), tmp_path)
    assert (report.exporter, report.warnings) == ("direct", [])


class PositionTable(layers.Layer):
    """Sine/cosine tables computed from the input's static shape, not its values."""

    def call(self, x):
        positions = ops.arange(x.shape[1], dtype="float32")
        angles = ops.expand_dims(positions, -1) * ops.arange(x.shape[2], dtype="float32")
        return ops.sin(angles), ops.cos(angles)


def test_outputs_computed_from_shapes_alone_are_constants(tmp_path):
    inputs = keras.Input((5, 4))
    sin, cos = PositionTable()(inputs)
    x = layers.Dense(4)(inputs * cos + sin)
    report = _fold(keras.Model(inputs, layers.BatchNormalization()(x)), tmp_path)
    assert (report.exporter, report.warnings) == ("direct", [])


class AddsAToken(layers.Layer):
    """Says it adds a token it does not add (keras-hub's SigLIP embedding does)."""

    def call(self, x):
        return ops.reshape(x, (-1, x.shape[1] * x.shape[2], x.shape[3]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * input_shape[2] + 1, input_shape[3])


class TensorFlowFlatMean(layers.Layer):
    """A layer calling TensorFlow itself: it cannot be traced into, so it is exported
    alone, at the shapes the traced graph gives it."""

    def call(self, x):
        return tf.reduce_mean(tf.reshape(x, (-1, x.shape[1] * x.shape[2])), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)


def test_shapes_follow_what_a_traced_layer_really_returns(tmp_path):
    inputs = keras.Input((4, 4, 3))
    x = layers.BatchNormalization()(layers.Conv2D(6, 1)(inputs))
    x = TensorFlowFlatMean()(layers.LayerNormalization()(AddsAToken()(x)))
    report = _fold(keras.Model(inputs, x), tmp_path)
    assert report.exporter == "direct"
    (warning,) = report.warnings
    assert "'tensor_flow_flat_mean' (TensorFlowFlatMean) was exported alone" in warning
    assert "test_hub.py" in warning and "tf.reduce_mean" in warning  # where its call failed


class TensorFlowMask(layers.Layer):
    """Reads an integer input with TensorFlow itself."""

    def call(self, x, keep):
        return x * tf.cast(tf.expand_dims(tf.minimum(keep, 1), -1), x.dtype)

    def compute_output_shape(self, x_shape, keep_shape):
        return x_shape


def test_a_layer_exported_alone_reads_an_integer_input_as_it_was_given(tmp_path):
    image = keras.Input((5, 5, 3), name="image")
    keep = keras.Input((5, 5), dtype="int32", name="keep")
    x = layers.BatchNormalization()(layers.Conv2D(4, 1)(image))
    x = layers.Conv2D(4, 1)(TensorFlowMask()(x, keep))
    report = _fold(keras.Model([image, keep], x), tmp_path)
    assert report.exporter == "direct"
    (warning,) = report.warnings
    assert "(TensorFlowMask) was exported alone" in warning


class TensorFlowWithScores(layers.Layer):
    """Returns its result and an empty score tensor (keras-hub's DeiT encoder does);
    exported alone, tf2onnx makes the empty output a constant."""

    def call(self, x):
        return tf.identity(x) * 2.0, tf.zeros((0, 2))

    def compute_output_shape(self, input_shape):
        return input_shape, (0, 2)


class ReluBlock(layers.Layer):
    """keras.activations.relu called on a tensor: an operation of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4)

    def call(self, x):
        return keras.activations.relu(self.dense(x), max_value=6.0)


def test_constant_outputs_of_a_layer_exported_alone_and_activation_operations(tmp_path):
    inputs = keras.Input((4,))
    x = ReluBlock()(layers.BatchNormalization()(layers.Dense(4)(inputs)))
    x, _ = TensorFlowWithScores()(x)
    report = _fold(keras.Model(inputs, layers.Dense(2)(x)), tmp_path)
    assert report.exporter == "direct"
    (warning,) = report.warnings
    assert "(TensorFlowWithScores) was exported alone" in warning


class HoldsAnUnusedNorm(layers.Layer):
    """Holds a built BatchNormalization its call never uses (keras-hub's BASNet keeps its
    ResNet encoder's stem that way)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4)
        self.spare = layers.BatchNormalization(name="spare")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.spare.build((None, 4))

    def call(self, x):
        return self.dense(x)


def test_a_batch_norm_never_called_is_reported_as_kept(tmp_path):
    inputs = keras.Input((4,))
    x = layers.BatchNormalization()(HoldsAnUnusedNorm()(inputs))
    report = _fold(keras.Model(inputs, layers.Dense(2)(x)), tmp_path)
    assert len(report.folded) == 1
    (kept,) = report.not_folded
    assert kept.bn == "spare" and kept.reason.startswith("never called")
