"""Small Keras models with trained-looking BatchNormalization statistics, for tests.

Each builder returns a model whose BatchNormalization layers carry random,
non-trivial moving statistics, gamma and beta, so a wrong fold shows up.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer inside ``model``: in nested models and inside custom layers too."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def randomize_batch_norms(
    model: keras.Model, seed: int = 0, variance: tuple[float, float] = (0.2, 3.0)
) -> keras.Model:
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization) and layer.built:
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 2, channels))
            layer.moving_variance.assign(rng.uniform(*variance, channels))
            if layer.scale:
                layer.gamma.assign(rng.normal(1, 0.5, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0, 1, channels))
        elif layer.weights and not isinstance(layer, keras.Model):
            for variable in layer.weights:
                if "bias" in variable.name:
                    variable.assign(rng.normal(0, 0.5, variable.shape))
    return model


def calibrate_batch_norms(
    model: keras.Model, data: np.ndarray | list[np.ndarray], seed: int = 0
) -> keras.Model:
    """Statistics like a trained network's: every BN's moving mean and variance set to
    what it really sees on ``data`` (one training-mode pass with momentum 0), then
    gamma and beta perturbed. Deep random networks with arbitrary statistics explode;
    calibrated ones stay in range, so their outputs can be compared meaningfully."""
    norms = [
        layer
        for layer in all_layers(model)
        if isinstance(layer, layers.BatchNormalization) and layer.built  # not one never called
    ]
    dropouts = [layer for layer in all_layers(model) if isinstance(layer, layers.Dropout)]
    momenta = [layer.momentum for layer in norms]
    rates = [layer.rate for layer in dropouts]
    for layer in norms:
        layer.momentum = 0.0
    for layer in dropouts:  # statistics of the inference-time distribution
        layer.rate = 0.0
    try:
        model(data, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, rates, strict=True):
            layer.rate = rate
    rng = np.random.default_rng(seed)
    for layer in norms:
        channels = layer.moving_mean.shape[0]
        if layer.scale:
            layer.gamma.assign(rng.normal(1, 0.2, channels))
        if layer.center:
            layer.beta.assign(rng.normal(0, 0.2, channels))
    return model


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], keras.Model]
    folded: int
    not_folded: int = 0
    removed: int = 0
    forward: int = 0


def seed_mlp() -> keras.Model:
    """The seed article's network, exactly as the demo model is built."""
    return _demo_module().build()


def _demo_module():
    path = Path(__file__).resolve().parents[1] / "models" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conv2d_no_bias() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            layers.Conv2D(8, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 3, strides=2, use_bias=True),
            layers.BatchNormalization(epsilon=1e-5),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(5),
        ]
    )


def conv1d_and_3d() -> keras.Model:
    first = keras.Input((20, 4), name="signal")
    second = keras.Input((6, 6, 6, 2), name="volume")
    a = layers.Conv1D(6, 5, dilation_rate=2)(first)
    a = layers.BatchNormalization()(a)
    a = layers.GlobalMaxPooling1D()(a)
    b = layers.Conv3D(5, 3, padding="same")(second)
    b = layers.BatchNormalization()(b)
    b = layers.GlobalAveragePooling3D()(b)
    out = layers.Dense(3)(layers.Concatenate()([a, b]))
    return keras.Model([first, second], out)


def depthwise() -> keras.Model:
    image = keras.Input((10, 10, 3), name="image")
    series = keras.Input((16, 4), name="series")
    a = layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)(image)
    a = layers.BatchNormalization()(a)
    a = layers.Activation("swish")(a)
    a = layers.GlobalAveragePooling2D()(a)
    b = layers.DepthwiseConv1D(3, depth_multiplier=3, padding="same")(series)
    b = layers.BatchNormalization()(b)
    b = layers.Flatten()(b)
    return keras.Model([image, series], [layers.Dense(4)(a), layers.Dense(2)(b)])


def separable() -> keras.Model:
    image = keras.Input((9, 9, 4))
    x = layers.SeparableConv2D(6, 3, depth_multiplier=2, padding="same")(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((81, 6))(x)
    x = layers.SeparableConv1D(5, 3, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return keras.Model(image, layers.GlobalAveragePooling1D()(x))


def transposed() -> keras.Model:
    image = keras.Input((5, 5, 3))
    series = keras.Input((7, 2))
    volume = keras.Input((3, 3, 3, 2))
    a = layers.Conv2DTranspose(4, 3, strides=2, use_bias=False)(image)
    a = layers.BatchNormalization()(a)
    b = layers.Conv1DTranspose(3, 3, strides=2, padding="same")(series)
    b = layers.BatchNormalization()(b)
    c = layers.Conv3DTranspose(2, 2, strides=2)(volume)
    c = layers.BatchNormalization()(c)
    return keras.Model([image, series, volume], [a, b, c])


def center_scale_off() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16),
            layers.BatchNormalization(center=False, epsilon=0.01),
            layers.ReLU(),
            layers.Dense(16, use_bias=False),
            layers.BatchNormalization(scale=False),
            layers.ReLU(),
            layers.Dense(12),
            layers.BatchNormalization(center=False, scale=False, epsilon=1e-5),
        ]
    )


def forward_after_activation() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((10,)),
            layers.Dense(32, activation="relu"),
            layers.BatchNormalization(),
            layers.Dense(8),
        ]
    )


def input_normalisation() -> keras.Model:
    table = keras.Input((6,), name="table")
    image = keras.Input((8, 8, 2), name="image")
    a = layers.Dense(4)(layers.BatchNormalization()(table))
    b = layers.Conv2D(3, 3, padding="valid", strides=2)(layers.BatchNormalization()(image))
    b = layers.GlobalAveragePooling2D()(b)
    return keras.Model([table, image], layers.Concatenate()([a, b]))


def forward_through_flatten() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dense(5),
        ]
    )


def unfoldable() -> keras.Model:
    image = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu")(image)
    x = layers.BatchNormalization(name="bn_before_same_conv")(x)
    x = layers.Conv2D(4, 3, padding="same")(x)
    y = layers.Dense(6, activation="relu")(layers.GlobalAveragePooling2D()(x))
    y = layers.BatchNormalization(name="bn_before_relu")(y)
    y = layers.ReLU()(y)
    return keras.Model(image, y)


def nested() -> keras.Model:
    block = keras.Sequential(
        [keras.Input((12,)), layers.Dense(12), layers.BatchNormalization(), layers.ReLU()],
        name="block",
    )
    head = keras.Sequential([keras.Input((12,)), layers.Dense(4)], name="head")
    inputs = keras.Input((12,))
    x = block(inputs)
    x = layers.Dense(12)(x)
    x = head(layers.BatchNormalization()(x))
    x = layers.BatchNormalization()(x)
    return keras.Model(inputs, x)


def multi_io_branches() -> keras.Model:
    left = keras.Input((10,), name="left")
    right = keras.Input((7,), name="right")
    a = layers.ReLU()(layers.BatchNormalization()(layers.Dense(16)(left)))
    b = layers.ReLU()(layers.BatchNormalization()(layers.Dense(16)(right)))
    merged = layers.Add()([a, b])
    trunk = layers.Dense(8, name="trunk")(merged)
    branch_1 = layers.Dense(3, activation="softmax", name="classes")(trunk)
    branch_2 = layers.BatchNormalization(name="score_bn")(layers.Dense(1)(merged))
    return keras.Model([left, right], [branch_1, branch_2, trunk])


def shared_layer() -> keras.Model:
    first = keras.Input((5,))
    second = keras.Input((5,))
    shared = layers.Dense(5, name="shared")
    a = layers.BatchNormalization()(shared(first))
    b = layers.BatchNormalization()(shared(second))
    return keras.Model([first, second], layers.Concatenate()([a, b]))


def residual_block() -> keras.Model:
    inputs = keras.Input((8, 8, 8))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    shortcut = layers.BatchNormalization()(layers.Conv2D(8, 1, use_bias=False)(inputs))
    x = layers.ReLU()(layers.Add()([x, shortcut]))
    x = layers.BatchNormalization(name="post_add_bn")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def identities_and_chains() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.GaussianNoise(0.3),
            layers.Conv2D(6, 3),
            layers.SpatialDropout2D(0.3),
            layers.BatchNormalization(),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Flatten(),
            layers.AlphaDropout(0.1),
            layers.BatchNormalization(),
            layers.BatchNormalization(),
            layers.GaussianDropout(0.2),
            layers.Dense(4),
        ]
    )


def sequence_axis() -> keras.Model:
    inputs = keras.Input((5, 6))
    x = layers.Dense(6)(inputs)
    x = layers.BatchNormalization(axis=1, name="bn_time_axis")(x)
    x = layers.BatchNormalization(axis=-1)(x)
    return keras.Model(inputs, layers.Dense(3)(x))


def input_normalization_layer() -> keras.Model:
    """A Normalization layer (its mean and variance are captured constants) before BN."""
    return keras.Sequential(
        [
            keras.Input((4,)),
            layers.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 4.0, 9.0, 16.0]),
            layers.Dense(6),
            layers.BatchNormalization(),
            layers.ReLU(),
        ]
    )


CASES = [
    Case("seed_mlp", seed_mlp, folded=2, removed=1),
    Case("conv2d_no_bias", conv2d_no_bias, folded=2),
    Case("conv1d_and_3d", conv1d_and_3d, folded=2),
    Case("depthwise", depthwise, folded=2),
    Case("separable", separable, folded=2),
    Case("transposed", transposed, folded=3),
    Case("center_scale_off", center_scale_off, folded=3),
    Case("forward_after_activation", forward_after_activation, folded=1, forward=1),
    Case("input_normalisation", input_normalisation, folded=2, forward=2),
    Case("forward_through_flatten", forward_through_flatten, folded=1, forward=1),
    Case("unfoldable", unfoldable, folded=0, not_folded=2),
    Case("nested", nested, folded=3),
    Case("multi_io_branches", multi_io_branches, folded=3),
    Case("shared_layer", shared_layer, folded=0, not_folded=2),
    Case("residual_block", residual_block, folded=3, not_folded=1),
    Case("identities_and_chains", identities_and_chains, folded=4, removed=4, forward=2),
    Case("input_normalization_layer", input_normalization_layer, folded=1),
    Case("sequence_axis", sequence_axis, folded=1, not_folded=1, forward=1),
]
