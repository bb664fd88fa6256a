"""Keras 2 files written by the Keras 2 model libraries themselves (segmentation_models,
efficientnet, classification_models, keras-unet-collection, keras-unet), folded through
``foldserve fold``: each answers like tf_keras did, every BN accounted for.

The libraries are not dependencies (``tests/keras2_libraries.py`` says how to install
them); a case whose library is missing is skipped. The default tier holds hand-made
equivalents of their patterns (``tests/folding/test_keras2_older.py``)."""

import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest

from tests import keras2_libraries as libraries
from tests.folding.test_cli import fold

pytestmark = pytest.mark.slow
CASES = [  # label, file, BNs, of which folded
    ("segmentation_models Unet resnet18", "model.h5", 29, 19),
    ("segmentation_models Unet resnet18", "model.keras", 29, 19),
    ("segmentation_models Linknet seresnet34", "model.h5", 50, 32),
    ("segmentation_models Unet efficientnetb0", "model.h5", 59, 59),
    ("segmentation_models FPN mobilenetv2", "model.keras", 61, 61),
    ("classification_models seresnet18", "model.h5", 19, 9),
    ("classification_models_3D seresnet18", "model.h5", 19, 9),
    ("keras_unet_collection unet_plus_2d", "model.h5", 12, 12),
    ("keras_unet custom_unet attention", "model.h5", 18, 1),
]
MODULES = {  # what each library needs to build its models
    "segmentation_models": ("segmentation_models", "skimage"),
    "efficientnet": ("efficientnet", "skimage"),
    "classification_models": ("classification_models",),
    "classification_models_3D": ("classification_models_3D",),
    "keras_unet_collection": ("keras_unet_collection",),
    "keras_unet": ("keras_unet", "matplotlib"),
}


def _installed(label: str) -> bool:
    return all(importlib.util.find_spec(name) for name in MODULES[label.split()[0]])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every case's files, written by tf_keras in one process of their own."""
    out = tmp_path_factory.mktemp("keras2-libs")
    labels = sorted({label for label, *_ in CASES if _installed(label)})
    with_keras = {label for label, file, *_ in CASES if file == "model.keras"}
    specs = [f"{label}:h5+keras" if label in with_keras else label for label in labels]
    if specs:
        result = libraries.write(out, specs)
        assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.parametrize(("label", "file", "batch_norms", "folded"), CASES)
def test_library_file_folds_and_answers_like_tf_keras(
    written, tmp_path, label, file, batch_norms, folded
):
    if not _installed(label):
        pytest.skip(f"{label.split()[0]} is not installed")
    directory = written / libraries.folder_name(label)
    assert not (directory / "error.txt").exists(), (directory / "error.txt").read_text()
    assert json.loads((directory / "meta.json").read_text())["batch_norms"] == batch_norms
    out = tmp_path / "out"
    result = fold(directory / file, "-o", out, "--samples", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"], report["verification"]
    assert len(report["folded"]) + len(report["not_folded"]) == batch_norms
    assert len(report["folded"]) == folded
    assert "from a Keras 2" in report["loader"]
    session = ort.InferenceSession(out / "model.onnx", providers=["CPUExecutionProvider"])
    inputs = np.load(directory / "inputs.npy")
    (answer,) = session.run(None, {session.get_inputs()[0].name: inputs})
    np.testing.assert_allclose(answer, np.load(directory / "expected.npy"), rtol=1e-3, atol=1e-4)
