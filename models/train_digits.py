"""Retrain the bundled demo model: the seed article's network on scikit-learn's digits.

    .venv/bin/python models/train_digits.py [--out models/digits/1/model.keras]

Dense(256) -> BatchNormalization -> ReLU -> Dropout -> Dense(128) ->
BatchNormalization -> ReLU -> Dense(10, softmax), on the 8x8 digit images that
scikit-learn ships (``load_digits``: no download). Inputs are the 64 raw pixel
intensities (0-16), row-major. Prints the held-out accuracy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 7


def build() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            layers.Dense(256),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dropout(0.2),
            layers.Dense(128),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(10, activation="softmax", name="probabilities"),
        ],
        name="digits",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "digits/1/model.keras")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()

    keras.utils.set_random_seed(SEED)
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0, validation_split=0.1)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"held-out accuracy {accuracy:.4f} on {len(x_test)} images; saved {args.out}")


if __name__ == "__main__":
    main()
