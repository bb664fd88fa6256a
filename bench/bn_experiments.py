"""The background article's batch-normalization claims, measured on scikit-learn's digits.

    .venv/bin/python -m pip install -e '.[bench]'   # matplotlib, for the plots
    .venv/bin/python bench/bn_experiments.py [--seeds 3] [--epochs 10] [--out docs]

1. The article's network, Dense(256) -> BN -> ReLU -> Dense(128) -> BN -> ReLU ->
   Dense(10, softmax), against the same network without BN, trained with SGD and
   with Adam (the article's optimizer) at learning rates 1e-3 .. 1 (log-spaced),
   over several seeds: held-out accuracy, divergence, epochs to 90 %, and the
   gap between training and held-out accuracy.
2. The BN network without Dropout, with Dropout(0.5) before each BN, and with it
   after each ReLU (--dropout-epochs, batch 32): held-out accuracy, the variance
   shift each BN sees on the training data at inference, and held-out accuracy
   after recalibrating the BN statistics (``folding.keras_graph.recalibrate``).

Writes ``<out>/bn.md`` (tables, verdicts; ``bench/bn_report.py``) and, with
matplotlib, ``<out>/bn_*.png``. About 3 minutes on 2 cores; bounded by --epochs,
--dropout-epochs and --seeds.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from bn_report import (
    CHANCE_LOSS,
    DROPOUT,
    LEARNING_RATES,
    OPTIMIZERS,
    PLACEMENTS,
    TARGET_ACCURACY,
    DropoutRun,
    Run,
    dropout_table,
    plot,
    sweep_table,
    verdicts,
    write_markdown,
)

from folding.quiet import import_keras


def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )


def network(keras, batch_norm: bool, dropout: str | None = None):
    """The article's network; ``dropout`` "before_bn" or "after_relu" adds Dropout layers."""
    layers = keras.layers
    stack = [keras.Input((64,), name="pixels")]
    for width in (256, 128):
        stack.append(layers.Dense(width))
        if dropout == "before_bn":
            stack.append(layers.Dropout(DROPOUT))
        if batch_norm:
            stack.append(layers.BatchNormalization())
        stack.append(layers.Activation("relu"))
        if dropout == "after_relu":
            stack.append(layers.Dropout(DROPOUT))
    stack.append(layers.Dense(10, activation="softmax"))
    return keras.Sequential(stack)


def train(keras, model, optimizer: str, learning_rate: float, data, epochs: int, batch_size: int):
    x_train, x_test, y_train, y_test = data
    make = keras.optimizers.SGD if optimizer == "sgd" else keras.optimizers.Adam
    model.compile(
        optimizer=make(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_test, y_test),
        verbose=0,
    )
    return history.history


def accuracy(model, x, y) -> float:
    probabilities = np.asarray(model(x, training=False))
    return float(np.mean(probabilities.argmax(axis=1) == y))


def learning_rate_sweep(keras, data, seeds: int, epochs: int, batch_size: int) -> list[Run]:
    runs = []
    for optimizer in OPTIMIZERS:
        for learning_rate in LEARNING_RATES:
            for batch_norm in (True, False):
                for seed in range(seeds):
                    keras.backend.clear_session()
                    keras.utils.set_random_seed(seed)
                    model = network(keras, batch_norm)
                    history = train(
                        keras, model, optimizer, learning_rate, data, epochs, batch_size
                    )
                    losses = history["loss"]
                    reached = [
                        i + 1 for i, a in enumerate(history["val_accuracy"]) if a >= TARGET_ACCURACY
                    ]
                    runs.append(
                        Run(
                            network="BN" if batch_norm else "no BN",
                            optimizer=optimizer,
                            learning_rate=learning_rate,
                            seed=seed,
                            accuracy=accuracy(model, data[1], data[3]),
                            train_accuracy=accuracy(model, data[0], data[2]),
                            diverged=not all(map(math.isfinite, losses))
                            or losses[-1] >= CHANCE_LOSS,
                            epochs_to_target=reached[0] if reached else None,
                        )
                    )
    return runs


def dropout_placements(keras, data, seeds: int, epochs: int, batch_size: int) -> list[DropoutRun]:
    from folding.diagnostics import variance_shift
    from folding.keras_graph.batch_norm import batch_norm_params
    from folding.keras_graph.recalibrate import input_statistics, recalibrate

    x_train, x_test, _, y_test = data
    runs = []
    for placement in PLACEMENTS:
        for seed in range(seeds):
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            model = network(keras, True, None if placement == "none" else placement)
            train(keras, model, "adam", 1e-3, data, epochs, batch_size)
            observed = input_statistics(model, [x_train])
            bns = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
            params = [batch_norm_params(bn) for bn in bns]
            variances = [observed[bn.name].variance for bn in bns]
            before = accuracy(model, x_test, y_test)
            recalibrate(model, [x_train])
            runs.append(
                DropoutRun(
                    placement=placement,
                    seed=seed,
                    accuracy=before,
                    recalibrated_accuracy=accuracy(model, x_test, y_test),
                    variance_shift=[
                        variance_shift(p, v) for p, v in zip(params, variances, strict=True)
                    ],
                    median_ratio=[
                        float(np.median((v + p.epsilon) / (p.moving_variance + p.epsilon)))
                        for p, v in zip(params, variances, strict=True)
                    ],
                )
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--dropout-epochs",
        type=int,
        default=30,
        help="epochs of the Dropout experiment (batch 32): enough steps for the moving "
        "statistics to settle (momentum 0.99 averages over ~100 steps)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = parser.parse_args()

    started = time.perf_counter()
    import_keras()
    import keras

    data = digits_split()
    runs = learning_rate_sweep(keras, data, args.seeds, args.epochs, args.batch_size)
    print(f"learning-rate sweep: {len(runs)} runs in {time.perf_counter() - started:.0f} s")
    dropout_runs = dropout_placements(keras, data, args.seeds, args.dropout_epochs, 32)
    args.out.mkdir(parents=True, exist_ok=True)
    images = plot(runs, dropout_runs, args.out)
    path = write_markdown(args.out, runs, dropout_runs, images, args, time.perf_counter() - started)
    for optimizer in OPTIMIZERS:
        print(f"\n{optimizer.upper()}")
        print("\n".join(sweep_table(runs, optimizer)[0]))
    print("\n" + "\n".join(dropout_table(dropout_runs)))
    print("\n" + "\n".join(verdicts(runs, dropout_runs, args.epochs)))
    print(f"\nwrote {path} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
