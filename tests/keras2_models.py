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
