"""Keras 2 model files written by the Keras 2 model libraries, and what tf_keras answers.

Run as a script, in a process of its own where ``tf.keras`` is tf_keras (the libraries
import ``tensorflow.keras``, which Keras 3 has replaced in a plain process)::

    TF_USE_LEGACY_KERAS=1 SM_FRAMEWORK=tf.keras python -m tests.keras2_libraries OUT NAME...

For each ``NAME`` of :data:`MODELS` it builds the model with random weights (never a
download: ``weights=None`` / ``encoder_weights=None``), gives its BNs trained-looking
statistics, saves it in each format asked for (``NAME:h5``, ``NAME:keras``,
``NAME:savedmodel``; ``.h5`` by default) under ``OUT/NAME/`` and writes
``inputs.npy``, ``expected.npy`` (tf_keras's answers) and ``meta.json`` (the model's
true BN count, counted through nested models). ``write(...)`` runs that process.

The libraries (bench-only, not pinned: they pin old versions of each other and of
numpy) install with::

    pip install --no-deps segmentation-models==1.0.1 efficientnet==1.1.1 \\
        image-classifiers==1.0.0 keras-applications==1.0.8 classification-models-3d==1.1.0 \\
        keras-unet-collection==0.1.13 keras-unet==0.1.2
    pip install scikit-image   # imported by efficientnet
    pip install matplotlib     # imported by keras-unet: in a venv of its own, since Keras 3
                               # imports matplotlib.pyplot whenever it is installed

The ``hand`` models need none of them: they rebuild the libraries' patterns with
tf_keras alone (``tests/keras2_models.py``'s way) for the default test tier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64


def _keras():
    import tensorflow as tf

    return tf.keras


def _sm(architecture: str, backbone: str, size: int = SIZE, **settings):
    def build():
        import segmentation_models as sm

        model_class = getattr(sm, architecture)
        return model_class(
            backbone,
            input_shape=(size, size, 3),
            encoder_weights=None,
            classes=2,
            activation="sigmoid",
            **settings,
        )

    return build


def _efficientnet(name: str):
    def build():
        import efficientnet.tfkeras as efn

        return getattr(efn, name)(weights=None, input_shape=(SIZE, SIZE, 3), classes=10)

    return build


def _classifier(name: str, size: int = SIZE):
    def build():
        from classification_models.tfkeras import Classifiers

        model_class, _ = Classifiers.get(name)
        return model_class(input_shape=(size, size, 3), weights=None, classes=10)

    return build


def _classifier_3d(name: str):
    def build():
        from classification_models_3D.tfkeras import Classifiers

        model_class, _ = Classifiers.get(name)
        return model_class(input_shape=(32, 32, 32, 2), weights=None, classes=4)

    return build


def _unet_collection(name: str, *args, **settings):
    def build():
        from keras_unet_collection import models

        return getattr(models, name)(*args, **settings)

    return build


def _keras_unet(name: str, **settings):
    def build():
        import keras_unet.models

        return getattr(keras_unet.models, name)(**settings)

    return build


_FILTERS = [8, 16, 32]
_UNET = {"batch_norm": True, "output_activation": "Sigmoid"}
MODELS: dict[str, Callable] = {
    "segmentation_models Unet resnet18": _sm("Unet", "resnet18"),
    "segmentation_models Unet resnet34": _sm("Unet", "resnet34"),
    "segmentation_models Unet seresnet18": _sm("Unet", "seresnet18"),
    "segmentation_models Unet efficientnetb0": _sm("Unet", "efficientnetb0"),
    "segmentation_models Unet mobilenetv2": _sm("Unet", "mobilenetv2"),
    "segmentation_models Unet densenet121": _sm("Unet", "densenet121"),
    "segmentation_models Unet inceptionv3": _sm("Unet", "inceptionv3", size=96),
    "segmentation_models Unet vgg16": _sm("Unet", "vgg16"),
    "segmentation_models Unet resnext50": _sm("Unet", "resnext50"),
    "segmentation_models FPN resnet18": _sm("FPN", "resnet18"),
    "segmentation_models FPN mobilenetv2": _sm("FPN", "mobilenetv2"),
    "segmentation_models FPN seresnext50": _sm("FPN", "seresnext50"),
    "segmentation_models Linknet resnet18": _sm("Linknet", "resnet18"),
    "segmentation_models Linknet seresnet34": _sm("Linknet", "seresnet34"),
    "segmentation_models Linknet mobilenet": _sm("Linknet", "mobilenet"),
    "segmentation_models PSPNet resnet18": _sm("PSPNet", "resnet18", size=96),
    "segmentation_models PSPNet inceptionv3": _sm("PSPNet", "inceptionv3", size=96),
    "efficientnet B0": _efficientnet("EfficientNetB0"),
    "efficientnet B3": _efficientnet("EfficientNetB3"),
    "classification_models resnet18": _classifier("resnet18"),
    "classification_models resnet50": _classifier("resnet50"),
    "classification_models seresnet18": _classifier("seresnet18"),
    "classification_models seresnext50": _classifier("seresnext50"),
    "classification_models resnext50": _classifier("resnext50"),
    "classification_models_3D resnet18": _classifier_3d("resnet18"),
    "classification_models_3D seresnet18": _classifier_3d("seresnet18"),
    "classification_models_3D densenet121": _classifier_3d("densenet121"),
    "keras_unet_collection unet_2d": _unet_collection("unet_2d", (64, 64, 3), _FILTERS, 2, **_UNET),
    "keras_unet_collection att_unet_2d": _unet_collection(
        "att_unet_2d", (64, 64, 3), _FILTERS, 2, **_UNET
    ),
    "keras_unet_collection r2_unet_2d": _unet_collection(
        "r2_unet_2d", (64, 64, 3), _FILTERS, 2, **_UNET
    ),
    "keras_unet_collection unet_plus_2d": _unet_collection(
        "unet_plus_2d", (64, 64, 3), _FILTERS, 2, **_UNET
    ),
    "keras_unet_collection unet_3plus_2d": _unet_collection(
        "unet_3plus_2d", (64, 64, 3), 2, _FILTERS, **_UNET
    ),
    "keras_unet_collection resunet_a_2d": _unet_collection(
        "resunet_a_2d", (64, 64, 3), _FILTERS, [[1], [1, 3], [1, 3]], 2, **_UNET
    ),
    "keras_unet_collection u2net_2d": _unet_collection(
        "u2net_2d", (64, 64, 3), 2, _FILTERS, batch_norm=True, output_activation="Sigmoid"
    ),
    "keras_unet_collection transunet_2d": _unet_collection(
        "transunet_2d",
        (64, 64, 3),
        _FILTERS,
        2,
        embed_dim=32,
        num_mlp=64,
        num_heads=2,
        num_transformer=2,
        **_UNET,
    ),
    "keras_unet_collection swin_unet_2d": _unet_collection(
        "swin_unet_2d",
        (64, 64, 3),
        16,
        2,
        depth=3,
        stack_num_down=2,
        stack_num_up=2,
        patch_size=(4, 4),
        num_heads=[2, 2, 2],
        window_size=[4, 2, 2],
        num_mlp=32,
        output_activation="Sigmoid",
    ),
    "keras_unet custom_unet": _keras_unet("custom_unet", input_shape=(64, 64, 3), filters=8),
    "keras_unet custom_unet attention": _keras_unet(
        "custom_unet", input_shape=(64, 64, 3), filters=8, use_attention=True
    ),
    "keras_unet satellite_unet": _keras_unet(
        "satellite_unet", input_shape=(64, 64, 3), num_layers=3
    ),
}
"""Every model this module can write, by the label the bench and tests use."""


def batch_norm_count(model) -> int:
    """BatchNormalization layers in ``model``, nested models and wrappers included."""
    return sum(1 for layer in _all_layers(model) if "BatchNormalization" in type(layer).__name__)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        inner = getattr(layer, "layer", None)  # TimeDistributed, Bidirectional
        if inner is not None:
            yield inner
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def randomise_batch_norms(model, seed: int = 1):
    """Trained-looking BN statistics (random init has mean 0 and variance 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if "BatchNormalization" not in type(layer).__name__:
            continue
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if "beta" in weight.name or "moving_mean" in weight.name:
                values.append(rng.normal(0, 0.2, shape))
            elif "moving_variance" in weight.name:
                values.append(rng.uniform(0.5, 2.0, shape))
            else:
                values.append(rng.uniform(0.7, 1.3, shape))
        layer.set_weights([value.astype("float32") for value in values])
    return model


def save_model(model, directory: Path, formats: list[str], rows: int = 4) -> None:
    """``model`` saved in ``formats`` under ``directory`` with its answers on random rows."""
    import warnings

    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    shape = [rows, *model.inputs[0].shape[1:]]
    inputs = np.random.default_rng(0).standard_normal(shape).astype("float32")
    expected = np.asarray(model(inputs, training=False))
    np.save(directory / "inputs.npy", inputs)
    np.save(directory / "expected.npy", expected)
    with warnings.catch_warnings():  # tf_keras warns that .h5 is its legacy format
        warnings.simplefilter("ignore", UserWarning)
        for form in formats:
            if form == "savedmodel":
                model.save(directory / "savedmodel", save_format="tf")
            else:
                model.save(directory / f"model.{form}")
    meta = {"batch_norms": batch_norm_count(model), "layers": len(model.layers)}
    (directory / "meta.json").write_text(json.dumps(meta))


def folder_name(label: str) -> str:
    return label.replace(" ", "_")


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    failed = 0
    for spec in argv[1:]:
        label, _, forms = spec.partition(":")
        directory = out / folder_name(label)
        try:
            builder = MODELS.get(label) or HAND[label]
            model = randomise_batch_norms(builder())
            save_model(model, directory, forms.split("+") if forms else ["h5"])
        except Exception as error:  # one model that cannot be built or saved is a row
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "error.txt").write_text(f"{type(error).__name__}: {error}"[:2000])
            failed += 1
    return 1 if failed == len(argv) - 1 else 0


def write(out: Path, specs: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run this module in a tf_keras process: ``specs`` are ``label[:h5+keras+savedmodel]``."""
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "SM_FRAMEWORK": "tf.keras",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "tests.keras2_libraries", str(out), *specs],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


HAND: dict[str, Callable] = {}
"""Hand-made models with the libraries' patterns, tf_keras only (filled below)."""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
