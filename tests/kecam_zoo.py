"""keras-cv-attention-models (kecam 1.4) models, saved as Keras 2 ``.h5`` files.

kecam's TensorFlow code is written for ``tf.keras``: on TensorFlow 2.16+ it sets
``TF_USE_LEGACY_KERAS=1`` and builds with tf_keras (Keras 2); its Keras 3 route
(``KECAM_BACKEND=keras_core``) needs torch. So its models reach foldserve the way a
kecam user holds them: ``model.save("x.h5")`` from tf_keras. Building needs its own
process (tf_keras must be chosen before TensorFlow is imported):

    .venv/bin/python -m tests.kecam_zoo OUT_DIR [NAME ...]

builds each model with random weights (``pretrained=None``: nothing is downloaded) at
64x64 and 10 logits out, sets its BN statistics to what they see on random images
(then perturbs gamma and beta: arbitrary statistics saturate these deep networks and
verification is then inconclusive), and writes ``OUT_DIR/NAME.h5`` and
``OUT_DIR/NAME.json`` (``{"bns": N}``: the BNs the model really has, counted through
every nested layer). ``build_h5`` runs that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (kecam module, constructor); one a family, the smallest
KECAM: dict[str, tuple[str, str]] = {
    "ResNest50": ("resnest", "ResNest50"),
    "RegNetY040": ("resnet_family", "RegNetY040"),
    "RegNetZB16": ("resnet_family", "RegNetZB16"),
    "ResNeXt50": ("resnet_family", "ResNeXt50"),
    "AotNet50": ("aotnet", "AotNet50"),
    "EfficientNetV1B0": ("efficientnet", "EfficientNetV1B0"),
    "EfficientNetV2B0": ("efficientnet", "EfficientNetV2B0"),
    "TinyNetE": ("mobilenetv3_family", "TinyNetE"),
    "MobileNetV3Small075": ("mobilenetv3_family", "MobileNetV3Small075"),
    "LCNet050": ("mobilenetv3_family", "LCNet050"),
    "GhostNet_100": ("ghostnet", "GhostNet_100"),
    "GhostNetV2_100": ("ghostnet", "GhostNetV2_100"),
    "ConvNeXtV2Atto": ("convnext", "ConvNeXtV2Atto"),
    "MobileViT_XXS": ("mobilevit", "MobileViT_XXS"),
    "MobileViT_V2_050": ("mobilevit", "MobileViT_V2_050"),
    "LeViT128S": ("levit", "LeViT128S"),
    "EfficientFormerL1": ("efficientformer", "EfficientFormerL1"),
    "EfficientFormerV2S0": ("efficientformer", "EfficientFormerV2S0"),
    "FastViT_T8": ("fastvit", "FastViT_T8"),
    "RepViT_M09": ("repvit", "RepViT_M09"),
    "CMTTiny": ("cmt", "CMTTiny"),
    "CoAtNet0": ("coatnet", "CoAtNet0"),
    "NFNetF0": ("nfnets", "NFNetF0"),
    "HorNetTiny": ("hornet", "HorNetTiny"),
    "InceptionNeXtTiny": ("inceptionnext", "InceptionNeXtTiny"),
    "FasterNetT0": ("fasternet", "FasterNetT0"),
    "EfficientViT_B0": ("efficientvit", "EfficientViT_B0"),
    "MogaNetXtiny": ("moganet", "MogaNetXtiny"),
    "TinyViT_5M": ("tinyvit", "TinyViT_5M"),
    "EdgeNeXt_XX_Small": ("edgenext", "EdgeNeXt_XX_Small"),
    "CSPNeXtTiny": ("cspnext", "CSPNeXtTiny"),
    "VanillaNet5": ("vanillanet", "VanillaNet5"),
    "UniformerSmall32": ("uniformer", "UniformerSmall32"),
}
SIZE = 64
KECAM_MODULE = "keras_cv_attention_models"
"""The ``--custom-objects`` module that registers kecam's own layers and activations
(under the package names 'kecamCommon', 'beit', 'resmlp', ...)."""


def build_h5(names: list[str], out: Path, timeout: float = 1200) -> dict[str, dict]:
    """Build ``names`` in a tf_keras process and save them into ``out``; each name's
    ``{"bns": N, "path": Path}`` (or ``{"error": "..."}`` where kecam could not build
    or save it)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.kecam_zoo", str(out), *names],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kecam build failed: {done.stderr.strip().splitlines()[-1:]}")
    results = {}
    for name in names:
        record = json.loads((out / f"{name}.json").read_text())
        if "bns" in record:
            record["path"] = out / f"{name}.h5"
        results[name] = record
    return results


def _calibrate(model, tf_keras, seed: int = 7) -> None:
    """As ``tests.zoo.calibrate_batch_norms``, on a tf_keras model."""
    import numpy as np

    inner = list(model._flatten_layers(include_self=False, recursive=True))
    norms = [layer for layer in inner if isinstance(layer, tf_keras.layers.BatchNormalization)]
    dropouts = [layer for layer in inner if isinstance(layer, tf_keras.layers.Dropout)]
    for layer in norms:
        layer.momentum = 0.0
    for layer in dropouts:
        layer.rate = 0.0
    images = np.random.default_rng(seed).uniform(0, 255, (16, SIZE, SIZE, 3)).astype("float32")
    model(images, training=True)
    rng = np.random.default_rng(seed)
    for layer in norms:
        channels = layer.moving_mean.shape[0]
        if layer.scale:
            layer.gamma.assign(rng.normal(1, 0.2, channels).astype("float32"))
        if layer.center:
            layer.beta.assign(rng.normal(0, 0.2, channels).astype("float32"))
    for layer in norms:
        layer.momentum = 0.99


def _main(out: Path, names: list[str]) -> None:
    import importlib

    import tf_keras

    for name in names or list(KECAM):
        module, constructor = KECAM[name]
        record: dict = {}
        try:
            library = importlib.import_module(f"keras_cv_attention_models.{module}")
            build = getattr(library, constructor)
            model = build(
                input_shape=(SIZE, SIZE, 3),
                pretrained=None,
                num_classes=10,
                classifier_activation=None,
            )
            _calibrate(model, tf_keras)
            inner = model._flatten_layers(include_self=False, recursive=True)
            norm = tf_keras.layers.BatchNormalization
            record["bns"] = sum(isinstance(layer, norm) for layer in inner)
            model.save(out / f"{name}.h5")
        except Exception as error:  # a model kecam cannot build here is a result too
            reason = (str(error).splitlines() or [""])[0][:160]
            record = {"error": f"{type(error).__name__}: {reason}"}
        (out / f"{name}.json").write_text(json.dumps(record))
        print(name, record, flush=True)


if __name__ == "__main__":
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("run with TF_USE_LEGACY_KERAS=1: kecam builds with tf_keras (see the docstring)")
    _main(Path(sys.argv[1]), sys.argv[2:])
