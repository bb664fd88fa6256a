"""Model code from two more Keras model libraries: keras-cv (Keras 3) and
keras-cv-attention-models (kecam; tf_keras only, so its models arrive as Keras 2 .h5).

keras-cv's models are built from their base classes with small configurations and
random weights (``tests/kerascv_zoo.py``; its presets download), kecam's in a tf_keras
process and saved as .h5 (``tests/kecam_zoo.py``). Each is folded, exported and
verified with every BN accounted for. The patterns these libraries showed are kept
below as hand-made models too: a convolution's softmax activation (keras-cv's
segmentation heads), a reshape folding patches into the batch (MobileViT), a BN after
a sum of convolutions and the identity (RepViT), a BN after a concatenation of
convolutions (ResNeSt). ``bench/third_party.py --only keras-cv`` / ``--only kecam``
sweep both libraries.
"""

import importlib.util
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from folding.options import FoldOptions
from folding.pipeline import fold_to_directory
from folding.sources import open_source
from tests import zoo
from tests.folding.test_zoo import batch_norm_count

FOLD = [sys.executable, "-m", "service.cli", "fold"]

pytestmark = [
    # at 64x64 kecam's last attention blocks see one token (MobileViT, ResNeSt's radix
    # softmax over one group): Keras warns that such a softmax always gives 1
    pytest.mark.filterwarnings("ignore:(?s).*softmax over axis:UserWarning"),
    # keras-cv's RetinaNet is built on a dict of images and called on the array
    pytest.mark.filterwarnings("ignore:(?s).*structure of `inputs` doesn't match:UserWarning"),
]


def calibrated(model: keras.Model, seed: int = 7) -> keras.Model:
    shape = (8, *model.input_shape[1:])
    images = np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")
    return zoo.calibrate_batch_norms(model, images, seed=seed)


def assert_folds_directly(report, bns: int) -> None:
    assert report.exporter == "direct"
    assert not [w for w in report.warnings if "exported alone" in w], report.warnings
    assert len(report.folded) + len(report.not_folded) == bns
    assert all(entry.reason for entry in report.not_folded)
    assert report.verification.passed, report.summary()


# -- keras-cv -----------------------------------------------------------------------------

# (model, BNs folded, BNs kept)
KERAS_CV_CASES = [
    ("segformer", 1, 0),  # its head's Conv2D(activation="softmax"), channels-first
    ("deeplab_v3_plus", 16, 9),  # SpatialPyramidPooling: a custom layer holding BNs
    # keras-cv's blocks create BNs that a block without expansion never calls
    ("efficientnet_v2", 13, 4),
    ("yolo_v8_detector", 57, 0),
]
SLOW_KERAS_CV = [
    "resnet_v1",
    "resnet_v1_bottleneck",
    "resnet_v2_bottleneck",
    "cspdarknet_depthwise",
    "densenet",
    "efficientnet_v1",
    "efficientnet_lite",
    "mobilenet_v3",
    "mit",
    "classifier",
    "retinanet",
    "basnet",
]


def kerascv_model(name: str) -> keras.Model:
    pytest.importorskip("keras_cv")
    from tests.kerascv_zoo import KERAS_CV

    return calibrated(KERAS_CV[name]())


@pytest.mark.parametrize(
    ("name", "folded", "kept"), KERAS_CV_CASES, ids=[case[0] for case in KERAS_CV_CASES]
)
def test_kerascv_models_fold_directly_with_every_batch_norm_accounted_for(
    name, folded, kept, tmp_path
):
    model = kerascv_model(name)
    report = fold_to_directory(model, tmp_path)
    assert_folds_directly(report, batch_norm_count(model))
    assert (len(report.folded), len(report.not_folded)) == (folded, kept)
    # BNs keras-cv creates and never calls: in blocks without expansion, and the
    # backbone's last one where DeepLabV3+ reads earlier features
    never_called = [e for e in report.not_folded if e.reason.startswith("never called")]
    assert len(never_called) == {"efficientnet_v2": 4, "deeplab_v3_plus": 1}.get(name, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_KERAS_CV)
def test_every_kerascv_family_folds_directly(name, tmp_path):
    model = kerascv_model(name)
    assert_folds_directly(fold_to_directory(model, tmp_path), batch_norm_count(model))


def test_a_saved_kerascv_model_folds_through_the_cli(tmp_path):
    """A .keras file of keras-cv classes, folded by ``foldserve fold`` with the
    operator's ``--custom-objects keras_cv``."""
    model = kerascv_model("segformer")
    path = tmp_path / "segformer.keras"
    model.save(path)
    out = tmp_path / "out"
    result = subprocess.run(
        [*FOLD, path, "-o", out, "--samples", "16", "--custom-objects", "keras_cv"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exporter"] == "direct"
    assert len(report["folded"]) + len(report["not_folded"]) == batch_norm_count(model) == 1
    assert report["verification"]["passed"]


# -- kecam (tf_keras .h5) -----------------------------------------------------------------

KECAM_DEFAULT = ["TinyNetE", "LCNet050"]
# (model, BNs folded, BNs kept)
KECAM_SLOW = [
    ("RepViT_M09", 107, 0),  # BN after dw3x3 + dw1x1 + identity
    ("ResNest50", 71, 0),  # BN after a concatenation of convolutions; tf.reduce_sum of a list
    ("MobileViT_XXS", 32, 0),  # tf.reshape(x, [-1, ...]) folding patches into the batch
    ("MobileViT_V2_050", 25, 0),
    ("EfficientNetV2B0", 59, 0),
    ("FasterNetT0", 17, 0),
    ("ResNeXt50", 53, 0),
    ("RegNetZB16", 68, 0),
]


def built_kecam(names: list[str], tmp_path_factory) -> dict[str, dict]:
    # looked up, not imported: importing kecam sets TF_USE_LEGACY_KERAS for the process
    for package in ("keras_cv_attention_models", "tf_keras"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")
    from tests.kecam_zoo import build_h5

    return build_h5(names, tmp_path_factory.mktemp("kecam"))


# (model, BNs) that load with kecam's module as the custom objects: its activation
# functions (hard_swish, recognised by its values), its own layers (ChannelAffine)
KECAM_CUSTOM = [("LCNet050", 27), ("EfficientFormerL1", 33)]


@pytest.fixture(scope="module")
def kecam_files(tmp_path_factory) -> dict[str, dict]:
    return built_kecam(KECAM_DEFAULT, tmp_path_factory)


@pytest.fixture(scope="module")
def more_kecam_files(tmp_path_factory) -> dict[str, dict]:
    names = [case[0] for case in KECAM_SLOW] + [case[0] for case in KECAM_CUSTOM]
    return built_kecam(names, tmp_path_factory)


def fold_file(path, out, **options):
    settings = FoldOptions(**options)
    return fold_to_directory(open_source(path, settings), out, settings)


def test_a_kecam_h5_file_folds_directly(kecam_files, tmp_path):
    record = kecam_files["TinyNetE"]
    report = fold_file(record["path"], tmp_path)
    assert_folds_directly(report, record["bns"])
    assert (len(report.folded), len(report.not_folded)) == (31, 0)


def test_a_kecam_file_with_its_own_activation_names_the_custom_objects_module(
    kecam_files, tmp_path
):
    """kecam registers its activations under 'kecamCommon': without its module the CLI
    says which function is missing and what to do (and names no made-up module)."""
    out = tmp_path / "out"
    result = subprocess.run(
        [*FOLD, kecam_files["LCNet050"]["path"], "-o", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "custom function 'kecamCommon>hard_swish', which is not registered" in line
    assert "--custom-objects MODULE" in line
    assert "builtins" not in line
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "bns"), KECAM_CUSTOM, ids=[c[0] for c in KECAM_CUSTOM])
def test_kecam_files_fold_with_its_module_as_custom_objects(name, bns, more_kecam_files, tmp_path):
    """Through the CLI (a process of its own: importing kecam sets TF_USE_LEGACY_KERAS)."""
    out = tmp_path / "out"
    options = ["--samples", "16", "--custom-objects", "keras_cv_attention_models"]
    result = subprocess.run(
        [*FOLD, more_kecam_files[name]["path"], "-o", out, *options],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exporter"] == "direct"
    assert not [w for w in report["warnings"] if "exported alone" in w], report["warnings"]
    assert len(report["folded"]) + len(report["not_folded"]) == more_kecam_files[name]["bns"]
    assert more_kecam_files[name]["bns"] == bns
    assert report["verification"]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "folded", "kept"), KECAM_SLOW, ids=[c[0] for c in KECAM_SLOW])
def test_kecam_h5_files_fold_directly(name, folded, kept, more_kecam_files, tmp_path):
    record = more_kecam_files[name]
    report = fold_file(record["path"], tmp_path)
    assert_folds_directly(report, record["bns"])
    assert (len(report.folded), len(report.not_folded)) == (folded, kept)


# -- the patterns, without the libraries --------------------------------------------------


def fold_model(model: keras.Model, tmp_path) -> object:
    model = zoo.randomize_batch_norms(model, seed=5)
    report = fold_to_directory(model, tmp_path)
    assert_folds_directly(report, batch_norm_count(model))
    return report


def test_a_convolutions_softmax_over_its_channels_is_written_directly(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs))
    outputs = layers.Conv2D(4, 1, activation="softmax")(layers.ReLU()(x))
    report = fold_model(keras.Model(inputs, outputs), tmp_path)
    assert len(report.folded) == 1


def test_a_reshape_folding_patches_into_the_batch_keeps_its_minus_one(tmp_path):
    """MobileViT's unfolding: (batch, 8, 8, C) -> (-1, 4, 2, C) multiplies the batch."""
    inputs = keras.Input((8, 8, 4))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
    patches = keras.ops.reshape(x, (-1, 4, 2, 4))
    x = keras.ops.reshape(layers.Dense(4)(patches), (-1, 8, 8, 4))
    report = fold_model(keras.Model(inputs, x), tmp_path)
    assert len(report.folded) == 1


def test_a_batch_norm_of_a_sum_of_convolutions_and_the_identity_folds_into_them(tmp_path):
    """RepViT's token mixer: bn(bn(dw3x3(x)) + dw1x1(x) + x), and a sum of two
    convolutions written with ``+``."""
    inputs = keras.Input((16, 16, 8))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    inner = layers.BatchNormalization()(
        layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    )
    x = layers.BatchNormalization()(layers.Add()([inner, layers.DepthwiseConv2D(1)(x), x]))
    x = layers.ReLU()(x)
    a = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    b = layers.Conv2D(8, 1, use_bias=False)(x)
    outputs = layers.BatchNormalization()(a + b)
    report = fold_model(keras.Model(inputs, layers.ReLU()(outputs)), tmp_path)
    assert report.not_folded == []
    into = {entry.bn: entry.into.split(", ") for entry in report.folded}
    assert sorted(len(targets) for targets in into.values()) == [1, 2, 2]


def test_a_batch_norm_of_a_sum_with_an_operand_of_no_weights_is_kept_with_the_reason(
    tmp_path,
):
    inputs = keras.Input((16, 16, 8))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    pooled = layers.MaxPooling2D(3, 1, padding="same")(x)
    total = layers.Add()([layers.Conv2D(8, 3, strides=1, padding="same")(x), pooled])
    outputs = layers.ReLU()(layers.BatchNormalization()(total))
    report = fold_model(keras.Model(inputs, outputs), tmp_path)
    (kept,) = report.not_folded
    assert "which has no weights, and no convolution of it beside" in kept.reason


def test_a_batch_norm_of_a_concatenation_of_convolutions_folds_a_slice_into_each(tmp_path):
    """ResNeSt's grouped convolution as one convolution a group, concatenated."""
    inputs = keras.Input((16, 16, 8))
    halves = keras.ops.split(inputs, 2, axis=-1)
    parts = [layers.Conv2D(4, 3, padding="same")(half) for half in halves]
    x = layers.ReLU()(layers.BatchNormalization()(layers.Concatenate()(parts)))
    joined = keras.ops.concatenate(
        [layers.Conv2D(3, 1)(x), layers.DepthwiseConv2D(3, padding="same")(x)], axis=-1
    )
    outputs = layers.BatchNormalization()(joined)
    report = fold_model(keras.Model(inputs, layers.ReLU()(outputs)), tmp_path)
    assert report.not_folded == []
    assert [len(entry.into.split(", ")) for entry in report.folded] == [2, 2]


def tf_hard_swish(inputs):
    """kecam's activation: TensorFlow code, which symbolic tracing cannot run."""
    import tensorflow as tf

    return inputs * tf.nn.relu6(inputs + 3) / 6


def test_an_activation_written_in_tensorflow_is_recognised_by_its_values(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs))
    x = layers.Activation(tf_hard_swish)(x)
    outputs = layers.Conv2D(4, 1, activation=tf_hard_swish)(x)
    report = fold_model(keras.Model(inputs, outputs), tmp_path)
    assert len(report.folded) == 1


def test_an_activation_matching_no_keras_one_still_goes_to_the_general_exporter(tmp_path):
    import tensorflow as tf

    def shifted_swish(inputs):
        return inputs * tf.sigmoid(inputs) + 0.01

    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
    model = zoo.randomize_batch_norms(keras.Model(inputs, layers.Activation(shifted_swish)(x)))
    report = fold_to_directory(model, tmp_path)
    assert report.verification.passed
    assert any("exported alone" in warning for warning in report.warnings)
