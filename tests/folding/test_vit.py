"""keras-hub's ViT backbone (random weights, never a preset), written whole directly."""

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from folding.pipeline import fold_to_directory
from tests import zoo

keras_hub = pytest.importorskip("keras_hub")


def _tiny_vit(**settings) -> keras.Model:
    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        **settings,
    )


def _count(model: keras.Model, kind: type) -> int:
    return sum(isinstance(layer, kind) for layer in zoo.all_layers(model))


@pytest.mark.parametrize(
    "settings",
    [{}, {"use_class_token": False, "use_patch_bias": False}],
    ids=["class_token", "no_class_token"],
)
def test_vit_backbone_is_written_whole_by_the_direct_exporter(settings, tmp_path):
    model = _tiny_vit(**settings)
    report = fold_to_directory(model, tmp_path)

    assert report.exporter == "direct"
    assert report.warnings == []  # no layer exported alone through the fallback
    assert len(report.folded) + len(report.not_folded) == _count(
        model, keras.layers.BatchNormalization
    )
    assert all(entry.reason for entry in report.not_folded)
    assert report.verification.passed, report.summary()

    folded = onnx.load(tmp_path / "model.onnx")
    ops = [node.op_type for node in folded.graph.node]
    assert ops.count("LayerNormalization") == _count(model, keras.layers.LayerNormalization)
    assert ops.count("Conv") == 1  # the patch embedding, not a spliced subgraph

    # a batch the verification's probes did not use, against Keras itself
    images = np.random.default_rng(5).normal(size=(3, 32, 32, 3)).astype(np.float32)
    session = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: images})
    expected = keras.ops.convert_to_numpy(model(images))
    tokens = 17 if not settings else 16
    assert got.shape == expected.shape == (3, tokens, 32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_every_layer_written_by_class_path_names_a_class_that_exists():
    import importlib

    from folding.export.layers.base import PATH_HANDLERS, writer_of

    assert PATH_HANDLERS
    for path in PATH_HANDLERS:
        module, _, name = path.rpartition(".")
        # a library upgrade that moves the class fails here, not in a fold
        cls = getattr(importlib.import_module(module), name)
        assert writer_of(cls.__new__(cls)) is PATH_HANDLERS[path]
