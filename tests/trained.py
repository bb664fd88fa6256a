"""A conv net trained on scikit-learn's bundled digits: real accuracy to lose or keep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Digits:
    model_path: Path
    calibration: Path  # training rows, .npy
    held_out: np.ndarray
    labels: np.ndarray


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], digits.target[order]


def train_digits_conv(directory: Path, epochs: int = 15) -> Digits:
    """Conv -> BN -> ReLU twice, then Dense -> BN -> ReLU -> Dense; ~99% held-out accuracy."""
    import keras
    from keras import layers

    images, labels = digits_images()
    train, held_out = slice(0, 1400), slice(1400, None)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="pixels"),
            layers.Conv2D(16, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[train], labels[train], epochs=epochs, batch_size=32, verbose=0)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "digits_conv.keras"
    model.save(model_path)
    calibration = directory / "calibration.npy"
    np.save(calibration, images[train][:256])
    return Digits(model_path, calibration, images[held_out], labels[held_out])


def plant_scale_spread(source: Path, target: Path, channels: int = 4, factor: float = 300.0):
    """The same function with the first BN's first ``channels`` scaled up by ``factor`` and
    the next Conv's matching input weights scaled down: a per-tensor int8 grid for the
    activation between them then has a step or two for the other channels."""
    import keras

    model = keras.saving.load_model(source)
    batch_norm, conv = model.layers[1], model.layers[3]
    gamma, beta, mean, variance = batch_norm.get_weights()
    gamma[:channels] *= factor
    beta[:channels] *= factor
    batch_norm.set_weights([gamma, beta, mean, variance])
    kernel, bias = conv.get_weights()
    kernel[:, :, :channels, :] /= factor
    conv.set_weights([kernel, bias])
    model.save(target)
    return target
