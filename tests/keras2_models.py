"""Models written by Keras 2 (tf_keras) as ``.h5`` / ``.keras`` files, with trained-looking
BNs, and the answers tf_keras itself gives for them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _keras2():
    import tf_keras

    return tf_keras


def mobilenet_like():
    """Conv -> BN -> ReLU6 -> DepthwiseConv2D (tf_keras writes groups=1) -> BN -> ..."""
    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.Conv2D(16, 1, use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    outputs = layers.Dense(10)(layers.GlobalAveragePooling2D()(x))
    return keras2.Model(inputs, outputs, name="mobilenet_like")


def resnet_like():
    """A residual block whose layer (and model) names contain '/'."""
    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((16, 16, 3), name="input/image")
    x = layers.Conv2D(8, 3, padding="same", name="stem/conv")(inputs)
    x = layers.Activation("relu", name="stem/relu")(layers.BatchNormalization(name="stem/bn")(x))
    y = layers.Conv2D(8, 3, padding="same", name="block1/conv1")(x)
    y = layers.BatchNormalization(name="block1/bn1")(y)
    y = layers.Activation("relu", name="block1/relu")(y)
    y = layers.Conv2D(8, 3, padding="same", name="block1/conv2")(y)
    y = layers.BatchNormalization(name="block1/bn2")(y)
    x = layers.Activation("relu", name="block1/out")(layers.Add(name="block1/add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras2.Model(inputs, layers.Dense(5, name="head/logits")(x), name="resnet/like")


def article_mlp():
    """The Sequential Dense -> BN -> Activation -> Dropout MLP of the usual tutorial."""
    keras2 = _keras2()
    layers = keras2.layers
    return keras2.Sequential(
        [
            layers.Dense(64, input_shape=(20,)),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dropout(0.3),
            layers.Dense(32),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dropout(0.3),
            layers.Dense(3, activation="softmax"),
        ]
    )


def channels_first_bn(renorm: bool = False):
    """BN(axis=1) after a channels-first Conv2D, with Keras 2's BN options spelled out."""
    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((4, 8, 8))
    x = layers.Conv2D(6, 3, padding="same", data_format="channels_first")(inputs)
    x = layers.BatchNormalization(
        axis=1, momentum=0.9, epsilon=1e-3, center=False, renorm=renorm, fused=None
    )(x)
    return keras2.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))


def assorted_layers():
    """Layers whose Keras 2 configs Keras 3 refuses as written: SeparableConv2D (an unused
    kernel_initializer), Conv2DTranspose (groups=1), SpatialDropout2D (noise_shape,
    trainable), and a nested Sequential with an input shape (and a '/' in its name)."""
    keras2 = _keras2()
    layers = keras2.layers
    head = keras2.Sequential(
        [layers.Dense(6, input_shape=(8,)), layers.BatchNormalization()], name="head/mlp"
    )
    inputs = keras2.Input((8, 8, 3))
    x = layers.SeparableConv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    x = layers.SpatialDropout2D(0.2)(layers.BatchNormalization()(x))
    x = layers.Dense(8)(layers.GlobalAveragePooling2D()(x))
    return keras2.Model(inputs, head(x))


def tf_ops():
    """TensorFlow functions and operators applied to symbolic tensors, which Keras 2 saves
    as TFOpLambda / SlicingOpLambda layers: a constant first operand (``1 - x``), tensor
    keyword arguments, list arguments (concat), split outputs, slicing, MobileNetV3's
    hard-swish (``x * relu6(x + 3) * (1 / 6)``), a squeeze-excite built from tf functions."""
    import tensorflow as tf

    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(6, 3, padding="same")(inputs))
    x = x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    gate = tf.sigmoid(tf.reduce_mean(x, axis=[1, 2], keepdims=True))
    x = tf.concat([x * gate, 1.0 - x], axis=-1)
    x = layers.BatchNormalization()(layers.Conv2D(8, 1, use_bias=False)(x))
    left, right = tf.split(x, 2, axis=-1)
    x = tf.maximum(left, right)[:, :4, :4, :2] + tf.square(left[:, 1:, :, ::2])[:, :4, :4] * 0.1
    x = tf.image.resize(x, (8, 8))
    flat = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, 2 * 8 * 8])
    head = tf.matmul(flat, tf.ones((128, 3)) * 0.01)
    outputs = tf.clip_by_value(tf.nn.softmax(head), 0.1, 0.9) ** 2
    return keras2.Model(inputs, tf.expand_dims(tf.math.rsqrt(outputs + 1.0), -1))


def application_layers():
    """The layers Keras 2's applications define themselves: ConvNeXt's LayerScale and
    StochasticDepth, InceptionResNetV2's CustomScaleLayer."""
    from tf_keras.src.applications.convnext import LayerScale, StochasticDepth
    from tf_keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
    branch = layers.BatchNormalization()(layers.Conv2D(4, 1, use_bias=False)(x))
    x = CustomScaleLayer(0.17)([x, branch])
    scaled = LayerScale(0.5, 4)(layers.Dense(4)(x))
    x = x + StochasticDepth(0.1)(scaled)
    return keras2.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))


def unknown_tf_function():
    import tensorflow as tf

    keras2 = _keras2()
    inputs = keras2.Input((4,))
    return keras2.Model(inputs, tf.math.cumsum(keras2.layers.Dense(2)(inputs), axis=-1))


def hard_sigmoid_model():
    keras2 = _keras2()
    inputs = keras2.Input((4,))
    return keras2.Model(inputs, keras2.layers.Dense(2, activation="hard_sigmoid")(inputs))


def mobilenet_v2():
    """tf_keras's own MobileNetV2, random weights (``weights=None``: nothing downloaded)."""
    return _keras2().applications.MobileNetV2(weights=None, input_shape=(64, 64, 3))


def lambda_model():
    keras2 = _keras2()
    inputs = keras2.Input((4,))
    doubled = keras2.layers.Lambda(lambda t: t * 2.0, name="doubler")(inputs)
    return keras2.Model(inputs, keras2.layers.Dense(2)(doubled))


def randomise_batch_norms(model, seed: int = 1):
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if type(layer).__name__ != "BatchNormalization":
            continue
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if "beta" in weight.name or "moving_mean" in weight.name:
                values.append(rng.normal(0, 0.3, shape))
            elif "moving_variance" in weight.name:
                values.append(rng.uniform(0.5, 2.0, shape))
            else:
                values.append(rng.uniform(0.5, 1.5, shape))
        layer.set_weights([value.astype("float32") for value in values])
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if getattr(layer, "layer", None) is not None:  # TimeDistributed's, Bidirectional's
            yield layer.layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def save(model, path: Path) -> Path:
    with warnings.catch_warnings():  # tf_keras warns that .h5 is its legacy format
        warnings.simplefilter("ignore", UserWarning)
        model.save(path)
    return path


def answers(model, rows: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random rows for ``model``'s one input and what tf_keras answers for them."""
    shape = [rows, *model.inputs[0].shape[1:]]
    inputs = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    return inputs, np.asarray(model(inputs, training=False))


def legacy_features():
    """What older Keras 2 models hold: regularizers, constraints and named initializers,
    a nested Sequential called inside a functional model, one Conv2D shared by two
    branches, Dense -> BN in the head."""
    keras2 = _keras2()
    layers = keras2.layers
    regularizer = keras2.regularizers.L1L2(l1=1e-5, l2=5e-4)
    inputs = keras2.Input((12, 12, 3))
    x = layers.Conv2D(
        6,
        3,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        kernel_constraint=keras2.constraints.MaxNorm(3.0),
    )(inputs)
    x = layers.LeakyReLU(0.1)(layers.BatchNormalization()(x))
    block = keras2.Sequential(
        [
            layers.Conv2D(6, 3, padding="same", input_shape=(12, 12, 6)),
            layers.BatchNormalization(),
            layers.ReLU(),
        ],
        name="block",
    )
    shared = layers.Conv2D(6, 1, use_bias=False, name="shared")
    x = layers.Add()([shared(block(x)), shared(x)])
    x = layers.BatchNormalization(name="after_shared")(x)
    x = layers.GlobalAveragePooling2D()(layers.Activation("relu")(x))
    x = layers.BatchNormalization()(layers.Dense(8, kernel_initializer="glorot_normal")(x))
    return keras2.Model(inputs, layers.Dense(3)(layers.Activation("tanh")(x)))


def time_distributed():
    """TimeDistributed(Conv2D) -> TimeDistributed(BN), as video models of Keras 2 do."""
    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((3, 8, 8, 2))
    x = layers.TimeDistributed(layers.Conv2D(4, 3, padding="same"))(inputs)
    x = layers.TimeDistributed(layers.BatchNormalization())(x)
    x = layers.TimeDistributed(layers.GlobalAveragePooling2D())(layers.ReLU()(x))
    return keras2.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))


def mixed_precision():
    """Built under the mixed_float16 policy (each layer's dtype a Policy dict)."""
    keras2 = _keras2()
    layers = keras2.layers
    keras2.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras2.Input((8, 8, 3))
        x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
        x = layers.GlobalAveragePooling2D()(layers.ReLU()(x))
        outputs = layers.Activation("linear", dtype="float32")(layers.Dense(2)(x))
        return keras2.Model(inputs, outputs)
    finally:
        keras2.mixed_precision.set_global_policy("float32")


_FAN_AVG = {"scale": 1.0, "mode": "fan_avg"}
_FAN_IN = {"scale": 2.0, "mode": "fan_in"}
OLD_INITIALIZERS = {  # Keras 2.2's spelling of each: VarianceScaling with its settings
    "GlorotUniform": ("VarianceScaling", {**_FAN_AVG, "distribution": "uniform"}),
    "GlorotNormal": ("VarianceScaling", {**_FAN_AVG, "distribution": "normal"}),
    "HeNormal": ("VarianceScaling", {**_FAN_IN, "distribution": "normal"}),
    "HeUniform": ("VarianceScaling", {**_FAN_IN, "distribution": "uniform"}),
}


def rewrite_as_older_keras(path: Path, era: str = "2.2.4") -> Path:
    """The .h5 file at ``path`` with its model config rewritten the way an older Keras
    wrote it (in place). ``"2.2.4"``: class_name "Model", no module paths, the
    initializers spelled as VarianceScaling (``"normal"`` distribution), BN's axis an
    int, the regularizer an ``L1L2``, a Policy dict without a module, and the file's
    keras_version 2.2.4; ``"2.0.8"``: that, with a Sequential model's config its list of
    layers and Concatenate / Add as the legacy ``Merge`` layer; ``"tf-1.15"``: tf.keras
    1.15's BN options spelled out (``fused``, ``renorm*``, ``virtual_batch_size``,
    ``adjustment``) and the axis a list."""
    import json

    import h5py

    def rewrite(item):
        if isinstance(item, list):
            return [rewrite(value) for value in item]
        if not isinstance(item, dict):
            return item
        item = {key: rewrite(value) for key, value in item.items()}
        old = era in {"2.2.4", "2.0.8"}
        if old:
            for key in ("module", "registered_name", "build_config"):
                item.pop(key, None)
        name, config = item.get("class_name"), item.get("config")
        if name == "Functional":
            item["class_name"] = "Model"
        if era == "2.0.8" and name == "Sequential":
            item["config"] = config["layers"]
        if era == "2.0.8" and name in {"Concatenate", "Add"}:
            mode = (
                {"mode": "concat", "concat_axis": config.pop("axis")}
                if name == "Concatenate"
                else {"mode": "sum"}
            )
            item.update(class_name="Merge", config={**config, **mode, "mode_type": "raw"})
        if name in OLD_INITIALIZERS and old:
            item["class_name"], settings = OLD_INITIALIZERS[name]
            item["config"] = {**settings, "seed": None}
        if name == "BatchNormalization" and isinstance(config, dict):
            axis = config["axis"]
            if old:
                config["axis"] = axis[0] if isinstance(axis, list) else axis
            else:
                config["axis"] = axis if isinstance(axis, list) else [axis]
                config.update(
                    renorm=False,
                    renorm_clipping=None,
                    renorm_momentum=0.99,
                    fused=None,
                    virtual_batch_size=None,
                    adjustment=None,
                )
        if name in {"Conv2D", "Dense"} and old and isinstance(config, dict):
            config.pop("groups", None)
        return item

    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        handle.attrs["model_config"] = json.dumps(rewrite(config))
        handle.attrs["keras_version"] = "2.2.4-tf" if era == "tf-1.15" else era
        handle.attrs["backend"] = "tensorflow"
    return path


def merge_sequential():
    """A Sequential MLP with a Concatenate and an Add inside a functional model."""
    keras2 = _keras2()
    layers = keras2.layers
    mlp = keras2.Sequential(
        [layers.Dense(6, input_shape=(5,)), layers.BatchNormalization(), layers.ReLU()]
    )
    inputs = keras2.Input((5,))
    x = layers.Concatenate()([mlp(inputs), layers.Dense(3)(inputs)])
    x = layers.BatchNormalization()(layers.Dense(4)(x))
    return keras2.Model(inputs, layers.Add()([x, layers.Dense(4)(inputs)]))


def slice_tensor(x, start, stop, axis):
    """classification_models' function of the same name (its grouped convolutions)."""
    if axis == 3:
        return x[:, :, :, start:stop]
    return x[:, start:stop, :, :]


def expand_dims(x, channels_axis):
    """classification_models' function of the same name (its squeeze-excite)."""
    if channels_axis == 3:
        return x[:, None, None, :]
    return x[:, :, None, None]


CLASSIFIERS_MODULE = "classification_models.models._common_blocks"


def classifier_lambdas():
    """classification_models' patterns (and so segmentation_models' SE-ResNet / ResNeXt
    backbones): a grouped convolution as Lambda channel slices, Conv2Ds and a
    Concatenate; a squeeze-excite whose pooled channels a Lambda expands. Save it with
    ``library_lambdas`` to record the library's module, as the library's models do."""
    keras2 = _keras2()
    layers = keras2.layers
    inputs = keras2.Input((8, 8, 4))
    groups = [
        layers.Conv2D(3, 3, padding="same", use_bias=False)(
            layers.Lambda(slice_tensor, arguments={"start": 2 * g, "stop": 2 * g + 2, "axis": 3})(
                inputs
            )
        )
        for g in range(2)
    ]
    x = layers.ReLU()(layers.BatchNormalization()(layers.Concatenate(axis=3)(groups)))
    gate = layers.GlobalAveragePooling2D()(x)
    gate = layers.Lambda(expand_dims, arguments={"channels_axis": 3})(gate)
    gate = layers.Conv2D(6, 1, activation="sigmoid")(layers.Conv2D(2, 1, activation="relu")(gate))
    x = layers.BatchNormalization()(layers.Conv2D(5, 1)(layers.Multiply()([x, gate])))
    return keras2.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))


def library_lambdas(path: Path, module: str = CLASSIFIERS_MODULE) -> Path:
    """The .h5 file at ``path`` with each Lambda's function recorded as defined in
    ``module`` (in place), as a model the library built records it."""
    import json

    import h5py

    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["config"]["module"] = module
        handle.attrs["model_config"] = json.dumps(config)
    return path


def fixed_dropout():
    """efficientnet's FixedDropout (a Dropout subclass; also in segmentation_models'
    EfficientNet backbones) after a BN, and a MultiHeadAttention called with its value
    by keyword (``attention(x, value=y)``)."""
    keras2 = _keras2()
    layers = keras2.layers

    class FixedDropout(layers.Dropout):
        def _get_noise_shape(self, inputs):
            return self.noise_shape

    inputs = keras2.Input((6, 8))
    x = layers.BatchNormalization()(layers.Dense(8)(inputs))
    x = FixedDropout(0.2, noise_shape=(None, 1, 1), name="drop")(x)
    x = layers.MultiHeadAttention(2, 4, name="attention")(x, value=layers.Dense(8)(inputs))
    return keras2.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))


def custom_gain():
    """A custom layer of the user's own (``tests/keras2_custom_layers.py`` defines the
    Keras 3 class of the same name) after a Conv2D -> BN."""
    keras2 = _keras2()
    layers = keras2.layers

    class ChannelGain(layers.Layer):
        def build(self, input_shape):
            self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gain

    inputs = keras2.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
    x = ChannelGain(name="gain")(x)
    model = keras2.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    model.get_layer("gain").set_weights([np.linspace(0.5, 1.5, 4).astype("float32")])
    return model
