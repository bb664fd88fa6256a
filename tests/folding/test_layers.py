"""Every Keras layer and activation with an inference meaning exports directly and
answers like Keras; what cannot be exported fails with one line naming the layer."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from folding.pipeline import fold_to_directory
from tests import zoo
from tests.folding.test_cli import assert_failed_cleanly, fold

ACTIVATIONS = [
    "relu",
    "relu6",
    "sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "tanh",
    "silu",
    "swish",
    "gelu",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "mish",
    "leaky_relu",
    "exponential",
    "linear",
]


def _dense_bn(x, units, activation, name):
    x = layers.Dense(units, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_act")(x)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_layer(activation, tmp_path):
    inputs = keras.Input((6,))
    x = _dense_bn(inputs, 8, activation, "block")
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Dense(3)(x)), seed=1)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert len(report.folded) == 1
    assert report.verification.passed, report.summary()


def test_gelu_exact_and_tanh_approximate_as_keras_operations(tmp_path):
    inputs = keras.Input((6,))
    x = layers.BatchNormalization()(layers.Dense(8)(inputs))
    exact = keras.ops.gelu(x, approximate=False)
    approximate = keras.ops.gelu(x, approximate=True)
    model = keras.Model(inputs, [exact, approximate, keras.activations.silu(x) * 2.0 + 1.0])
    report = fold_to_directory(zoo.randomize_batch_norms(model, seed=2), tmp_path)
    assert report.exporter == "direct"
    assert report.verification.passed, report.summary()
    assert report.onnx["folded"].op_counts["Erf"] == 1
    assert report.onnx["folded"].op_counts["Tanh"] == 1


def image_layers() -> keras.Model:
    """Normalisation, padding, cropping, resizing and shape layers around folded convs."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    x = layers.Normalization(mean=[0.1, 0.0, -0.1], variance=[0.5, 1.0, 2.0])(x)
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("gelu")(x)
    x = layers.Cropping2D(((1, 0), (0, 1)))(x)
    x = layers.UpSampling2D(2)(x)
    y = layers.UpSampling2D(2, interpolation="bilinear")(layers.Conv2D(8, 1)(x))
    x = layers.MaxPooling2D(2, strides=1, padding="same")(x)
    x = layers.Concatenate()([x, layers.AveragePooling2D(2, padding="same")(y)])
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.1)(x)
    x = layers.GroupNormalization(groups=4)(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(max_value=6.0)(x)
    x = layers.LayerNormalization()(x)
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Reshape((-1, 16))(x)
    x = layers.UnitNormalization()(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(10)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ELU()(x)
    x = layers.Dense(5)(x)
    return keras.Model(inputs, layers.Softmax()(x))


def test_image_layers_export_directly_and_match(tmp_path):
    model = zoo.randomize_batch_norms(image_layers(), seed=3)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert len(report.folded) == 4
    assert report.verification.passed, report.summary()
    assert report.verification.probes == "Rescaling input range"


def test_grouped_convolution_folds_and_exports(tmp_path):
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(8, 3, groups=2)(inputs)
    x = layers.BatchNormalization()(x)
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.ReLU()(x)), seed=4)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct" and len(report.folded) == 1
    assert report.verification.passed, report.summary()


def test_mixed_float16_model_folds(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 3))
        x = layers.Conv2D(8, 3)(inputs)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(4, dtype="float32")(x)
        model = zoo.randomize_batch_norms(keras.Model(inputs, outputs), seed=5)
    finally:
        keras.config.set_dtype_policy("float32")
    report = fold_to_directory(model, tmp_path)
    verification = report.verification
    assert verification.compared_dtype == "float16"
    assert verification.passed, report.summary()
    assert verification.export_rtol == 3e-2
    (check,) = verification.outputs
    assert check.fold_error < 1e-5 < check.export_error


def test_a_layer_without_a_direct_form_alone_goes_through_the_general_exporter(tmp_path):
    inputs = keras.Input((5, 3))
    x = layers.LSTM(4, name="recurrent")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Dense(4)(x))
    model = zoo.randomize_batch_norms(keras.Model(inputs, x), seed=6)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert [entry.bn for entry in report.folded] == ["bn"]
    assert any("layer 'recurrent' (LSTM) was exported alone" in w for w in report.warnings)
    assert report.verification.passed, report.summary()


def test_model_that_cannot_be_exported_fails_naming_the_layer(tmp_path):
    inputs = keras.Input((3,))
    x = layers.Discretization(bin_boundaries=[0.0, 1.0], name="buckets")(inputs)
    x = layers.Dense(4)(keras.ops.cast(x, "float32"))
    source = tmp_path / "buckets.keras"
    keras.Model(inputs, layers.BatchNormalization()(x)).save(source)
    out = tmp_path / "out"
    result = fold(source, "-o", out)
    assert_failed_cleanly(result, out, "layer 'buckets' (Discretization)")
    assert "Traceback" not in result.stderr


def test_saturated_model_is_inconclusive(tmp_path):
    """Outputs that do not vary across probes prove nothing: the report says so."""
    inputs = keras.Input((4,))
    x = layers.Dense(8, kernel_initializer=keras.initializers.Constant(50.0))(inputs)
    x = layers.BatchNormalization()(x)
    outputs = layers.Dense(3, activation="sigmoid", bias_initializer="ones")(
        layers.Activation("relu")(x) * 0.0 + 30.0
    )
    model = zoo.randomize_batch_norms(keras.Model(inputs, outputs), seed=7)
    source = tmp_path / "saturated.keras"
    model.save(source)
    result = fold(source, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "inconclusive" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verification"]["inconclusive"] is True
    assert report["verification"]["verdict"] == "inconclusive"


def test_probes_follow_an_input_normalization(tmp_path):
    """Pixels around 120 +- 60: standard-normal probes would all sit 2 std below the mean."""
    inputs = keras.Input((16,))
    x = layers.Normalization(mean=120.0, variance=3600.0)(inputs)
    x = layers.BatchNormalization()(layers.Dense(8)(x))
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Dense(3)(x)), seed=8)
    report = fold_to_directory(model, tmp_path)
    assert report.verification.probes == "Normalization statistics"
    assert not report.verification.inconclusive


def _onnx_matches_keras(model, directory, feed, rtol=1e-5):
    """Both written files, in a *default* ONNX Runtime session, answer like Keras."""
    import onnxruntime

    want = np.asarray(model(feed))
    for file in ("model.onnx", "unfolded.onnx"):
        session = onnxruntime.InferenceSession(
            str(directory / file), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {session.get_inputs()[0].name: feed})
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_zero_padding_before_max_pooling_is_right_in_any_session(tmp_path):
    """ONNX Runtime's Pad_Fusion moves a zero Pad into MaxPool's -inf padding; the
    written files must not let it (negative inputs show the difference)."""
    inputs = keras.Input((9, 9, 3))
    x = layers.Conv2D(4, 3)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Flatten()(x)), seed=9)
    fold_to_directory(model, tmp_path)
    feed = -np.abs(np.random.default_rng(0).normal(size=(4, 9, 9, 3))).astype(np.float32) - 5
    _onnx_matches_keras(model, tmp_path, feed)


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_integer_image_inputs_are_cast_like_keras(dtype, tmp_path):
    inputs = keras.Input((6, 6, 3), dtype=dtype)
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.BatchNormalization()(layers.Conv2D(4, 3)(x))
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Flatten()(x)), seed=10)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct" and report.verification.passed
    feed = np.random.default_rng(0).integers(0, 256, (3, 6, 6, 3)).astype(dtype)
    _onnx_matches_keras(model, tmp_path, feed)


def test_channels_first_flatten_order(tmp_path):
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(5, 1)(inputs)
    x = layers.Flatten(data_format="channels_first")(layers.BatchNormalization()(x))
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Dense(3)(x)), seed=11)
    report = fold_to_directory(model, tmp_path)
    assert report.verification.passed and report.verification.export_error < 1e-5


def test_transposed_convolution_with_output_padding(tmp_path):
    inputs = keras.Input((5, 5, 3))
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="valid", output_padding=1)(inputs)
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.BatchNormalization()(x)), 12)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct" and report.verification.passed, report.summary()


def test_model_returning_its_input_and_keras_operations(tmp_path):
    inputs = keras.Input((6,), name="x")
    hidden = layers.BatchNormalization()(layers.Dense(6)(inputs))
    mixed = keras.ops.leaky_relu(hidden) + keras.ops.gelu(hidden, approximate=False)
    model = zoo.randomize_batch_norms(keras.Model(inputs, [mixed, inputs]), seed=13)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct" and report.verification.passed, report.summary()


def test_dynamic_image_size_is_probed_at_a_size_deep_nets_can_take(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = inputs
    for _ in range(5):  # 1/32 of the input: a 16x16 probe would be gone
        x = layers.Conv2D(4, 3, strides=2, padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.DepthwiseConv2D(3, padding="valid")(layers.ZeroPadding2D(1)(x))
    model = zoo.randomize_batch_norms(
        keras.Model(inputs, layers.GlobalAveragePooling2D()(x)), seed=14
    )
    report = fold_to_directory(model, tmp_path)
    assert report.verification.passed, report.summary()


def test_masked_embedding_is_probed_with_valid_ids(tmp_path):
    inputs = keras.Input((5,), dtype="int32")
    x = layers.Embedding(20, 4, mask_zero=True)(inputs)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.BatchNormalization()(layers.Dense(4)(x))
    model = zoo.randomize_batch_norms(keras.Model(inputs, x), seed=15)
    report = fold_to_directory(model, tmp_path)
    assert report.verification.probes == "embedding ids"
    assert report.verification.passed, report.summary()


# -- keras.ops calls, custom layers, nested and Functional-subclass models ------------

ops = keras.ops

KERAS_OPS = {
    "mean": lambda x: ops.mean(x, axis=[1, 2]),
    "mean_keepdims_conv": lambda x: layers.Conv2D(3, 1)(ops.mean(x, axis=[1, 2], keepdims=True)),
    "split_concatenate": lambda x: ops.concatenate(ops.split(x, 2, axis=-1)[::-1], axis=-1),
    "reshape_matmul": lambda x: ops.matmul(
        ops.reshape(x, (-1, 36, 4)), ops.transpose(ops.reshape(x, (-1, 36, 4)), (0, 2, 1))
    ),
    "resize_bilinear": lambda x: ops.image.resize(x, (9, 4)),
    "resize_nearest": lambda x: ops.image.resize(x, (13, 4), interpolation="nearest"),
    "transpose_channels_first": lambda x: ops.transpose(x, (0, 3, 1, 2)),
    "pad": lambda x: layers.Conv2D(2, 3)(ops.pad(x, [[0, 0], [1, 2], [0, 1], [0, 0]])),
    "pad_reflect": lambda x: ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect"),
    "get_item": lambda x: x[:, 1:-1, ::2, 0] + x[..., None, 2][:, :-2, 1::2, 0],
    "softmax": lambda x: ops.softmax(x, axis=-1) + ops.log_softmax(x, axis=1),
    "arithmetic": lambda x: ops.sqrt(ops.abs(x) + 1.0) / 2.0 - x * x + ops.power(ops.abs(x), 1.5),
    "erf_gelu": lambda x: ops.erf(x) + ops.gelu(x, approximate=False) + ops.gelu(x),
    "activations": lambda x: (
        ops.sigmoid(x)
        + ops.tanh(x)
        + ops.relu(x)
        + ops.relu6(x)
        + ops.silu(x)
        + ops.hard_swish(x)
        + ops.hard_sigmoid(x)
    ),
    "expand_squeeze_cast": lambda x: ops.squeeze(
        ops.expand_dims(ops.cast(ops.cast(x * 3, "int32"), "float32"), 1), 1
    ),
    "max_min_sum": lambda x: ops.max(x, axis=-1) + ops.min(x, axis=-1) + ops.sum(x, axis=-1),
    "clip": lambda x: ops.clip(x, -0.5, 0.5),
    "einsum": lambda x: ops.einsum("bhwc,bhwd->bcd", x, x),
    "stack_unstack": lambda x: ops.stack([x[..., 0], ops.unstack(x, axis=-1)[1] * 2], 1),
    "var_std": lambda x: ops.var(x, axis=[1, 2]) + ops.std(x, axis=[1, 2]),
    "normalisations": lambda x: (
        ops.rms_normalization(x, axis=-1)
        + ops.normalize(x, axis=-1)
        + ops.layer_normalization(x, axis=-1)
    ),
    "tile_repeat": lambda x: ops.tile(x, (1, 2, 1, 1)) + ops.repeat(x, 2, axis=1),
    "flip_roll_take": lambda x: ops.flip(x, 1) + ops.roll(x, 2, 2) + ops.take(x, [0, 2, 1, 3], 3),
    "depth_to_space": lambda x: ops.nn.depth_to_space(x, 2),
    "where_compare": lambda x: ops.where(ops.logical_and(x > 0, x < 1), x, 0.1 * x),
    "moveaxis_cumsum": lambda x: ops.cumsum(ops.moveaxis(x, -1, 1), axis=2),
    "batch_normalization_op": lambda x: ops.batch_normalization(
        x, np.arange(4.0), np.linspace(0.5, 2, 4), axis=-1, offset=np.ones(4), scale=np.ones(4)
    ),
    "attention": lambda x: ops.nn.dot_product_attention(*[ops.reshape(x, (-1, 18, 2, 4))] * 3),
}


@pytest.mark.parametrize("name", list(KERAS_OPS))
def test_keras_operations_export_directly(name, tmp_path):
    inputs = keras.Input((6, 6, 4))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(4, 1)(inputs))
    model = zoo.randomize_batch_norms(keras.Model(inputs, KERAS_OPS[name](x)), seed=1)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert report.warnings == []
    assert [entry.bn for entry in report.folded] == ["bn"]
    assert report.verification.passed, report.summary()


def test_clipped_relus_export_as_clip(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU(max_value=6.0)(layers.Conv2D(4, 3)(inputs))
    x = layers.Activation("relu6")(layers.Conv2D(4, 3)(x))
    x = ops.relu6(layers.Conv2D(4, 3)(x))
    x = layers.ReLU(max_value=2.0, negative_slope=0.1)(x)
    report = fold_to_directory(keras.Model(inputs, x), tmp_path)
    counts = report.onnx["folded"].op_counts
    assert counts["Clip"] == 4
    assert "Min" not in counts
    assert report.verification.passed, report.summary()


def test_gelu_is_written_in_the_form_onnx_runtime_fuses(tmp_path):
    import onnx
    import onnxruntime as ort

    inputs = keras.Input((8,))
    model = keras.Model(inputs, layers.Dense(8, activation="gelu")(inputs))
    fold_to_directory(model, tmp_path)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert "Gelu" in optimized
    assert "Erf" not in optimized


class ConvBlock(layers.Layer):
    """A custom layer whose call is built from known layers and keras.ops."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(filters, 3, padding="same", use_bias=False, name="conv")
        self.bn = layers.BatchNormalization(name="bn")
        self.scale = None

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x, training=None):
        y = self.bn(self.conv(x), training=training)
        return ops.relu6(y) * self.scale + x


class Stage(layers.Layer):
    """A custom layer holding custom layers and a nested model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = ConvBlock(4, name="first")
        self.second = ConvBlock(4, name="second")
        inputs = keras.Input((6, 6, 4))
        x = layers.BatchNormalization(name="bn")(layers.Conv2D(4, 1, name="conv")(inputs))
        self.head = keras.Model(inputs, x, name="head")

    def call(self, x):
        return self.head(self.second(self.first(x)))


class Backbone(keras.Model):
    """A Functional subclass, as keras-hub's backbones are."""

    def __init__(self, **kwargs):
        inputs = keras.Input((6, 6, 4))
        super().__init__(inputs, Stage(name="stage")(inputs), **kwargs)


def test_custom_layers_nested_models_and_functional_subclasses_are_traced_into(tmp_path):
    model = Backbone(name="backbone")
    model(np.zeros((1, 6, 6, 4), np.float32))
    model = zoo.randomize_batch_norms(model, seed=4)
    for layer in zoo.all_layers(model):
        if getattr(layer, "scale", None) is not None and isinstance(layer, ConvBlock):
            layer.scale.assign(np.linspace(0.5, 1.5, 4))
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert report.warnings == []
    assert sorted(entry.bn for entry in report.folded) == [
        "stage_first_bn",
        "stage_head_bn",
        "stage_second_bn",
    ]
    assert report.not_folded == []
    assert report.verification.passed, report.summary()


class Untraceable(layers.Layer):
    """Calls TensorFlow directly, so its call cannot run on symbolic tensors."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 1, name="conv")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x):
        import tensorflow as tf

        return tf.nn.relu(self.bn(self.conv(x)))


def test_a_layer_that_cannot_be_traced_is_exported_alone_and_its_batch_norms_reported(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = layers.BatchNormalization(name="outer_bn")(layers.Conv2D(4, 3, name="stem")(inputs))
    x = Untraceable(name="opaque")(x)
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Conv2D(2, 1)(x)), seed=5)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert [entry.bn for entry in report.folded] == ["outer_bn"]
    (kept,) = report.not_folded
    assert kept.bn == "opaque/bn"
    assert "inside layer 'opaque' (Untraceable)" in kept.reason
    assert "could not be traced" in kept.reason
    assert any("layer 'opaque' (Untraceable) was exported alone" in w for w in report.warnings)
    assert report.verification.passed, report.summary()
