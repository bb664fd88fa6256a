"""Every architecture of the zoo: folded, exported, verified against Keras."""

import json

import keras
import numpy as np
import onnx
import pytest

from folding.export.pair import flat_caller
from folding.keras_graph.fold import fold_model
from folding.pipeline import fold_to_directory
from folding.verify.probes import probe_inputs
from folding.verify.verdict import run_onnx
from tests import zoo


@pytest.fixture(params=zoo.CASES, ids=lambda case: case.name)
def case(request):
    return request.param


def batch_norm_count(model: keras.Model) -> int:
    return sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in zoo.all_layers(model)
    )


def test_folds_exports_and_matches_keras(case, tmp_path):
    model = zoo.randomize_batch_norms(case.build(), seed=3)
    report = fold_to_directory(model, tmp_path)

    assert len(report.folded) == case.folded
    assert len(report.not_folded) == case.not_folded
    assert len(report.removed) == case.removed
    assert sum(entry.direction == "forward" for entry in report.folded) == case.forward
    assert report.verification.passed
    assert report.verification.max_rel_error < 1e-4
    saved = json.loads((tmp_path / "report.json").read_text())
    assert {"folded", "not_folded", "removed", "verification", "onnx"} <= saved.keys()
    assert saved["onnx"]["folded"]["nodes"] > 0
    for entry in saved["folded"]:
        assert entry["direction"] in {"backward", "forward"}
        stats = entry["stats"]
        assert stats["scale"]["min"] <= stats["scale"]["max"]
        assert stats["moving_variance"]["min"] > 0
        per_channel = stats["per_channel"]
        assert len(per_channel["scale"]) == stats["channels"]
        assert min(per_channel["scale"]) == pytest.approx(stats["scale"]["min"], rel=1e-6)
        gamma = per_channel["gamma"] or [1.0] * stats["channels"]
        expected = [
            g / (v + stats["epsilon"]) ** 0.5
            for g, v in zip(gamma, per_channel["moving_variance"], strict=True)
        ]
        assert per_channel["scale"] == pytest.approx(expected, rel=1e-5)
    for entry in saved["not_folded"]:
        assert entry["reason"]


def test_no_batch_norm_left_where_folding_was_possible(case):
    model = zoo.randomize_batch_norms(case.build(), seed=4)
    result = fold_model(model)
    assert batch_norm_count(result.model) == case.not_folded
    assert batch_norm_count(model) == case.folded + case.not_folded
    kept = {layer.name for layer in zoo.all_layers(result.model)}
    assert not {entry.layer for entry in result.removed} & kept


def test_unfolded_export_matches_keras_too(case, tmp_path):
    model = zoo.randomize_batch_norms(case.build(), seed=5)
    fold_to_directory(model, tmp_path)
    names = [tensor.name for tensor in onnx.load(tmp_path / "unfolded.onnx").graph.input]
    probes = probe_inputs(_specs(model), samples=8, seed=9)
    want = [np.asarray(out) for out in flat_caller(model)(probes)]
    got = run_onnx(tmp_path / "unfolded.onnx", names, probes)
    for expected, actual in zip(want, got, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _specs(model):
    from folding.keras_graph.graph import trace

    return trace(model).inputs


def test_tiny_variances_fold_exactly(tmp_path):
    model = zoo.randomize_batch_norms(zoo.seed_mlp(), seed=6, variance=(1e-9, 1e-7))
    report = fold_to_directory(model, tmp_path)
    assert len(report.folded) == 2
    assert report.verification.passed


def test_dropout_is_gone_from_the_folded_onnx(tmp_path):
    model = zoo.randomize_batch_norms(zoo.seed_mlp(), seed=1)
    report = fold_to_directory(model, tmp_path)
    folded_ops = report.onnx["folded"].op_counts
    unfolded_ops = report.onnx["unfolded"].op_counts
    assert "BatchNormalization" not in folded_ops and "Mul" not in folded_ops
    assert unfolded_ops["BatchNormalization"] == 2
    assert "Dropout" not in unfolded_ops
    assert report.onnx["folded"].nodes < report.onnx["unfolded"].nodes


def _loaded_graph(path, tmp_path, unfolded):
    """The graph ONNX Runtime really runs: the session's optimised model."""
    import onnxruntime

    from folding.verify.fusions import ALWAYS_DISABLED_OPTIMIZERS, UNFOLDED_DISABLED_OPTIMIZERS

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"loaded-{path.name}")
    disabled = UNFOLDED_DISABLED_OPTIMIZERS if unfolded else ALWAYS_DISABLED_OPTIMIZERS
    onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    return onnx.load(options.optimized_model_filepath).graph


def test_unfolded_keeps_one_batch_norm_per_keras_batch_norm(case, tmp_path):
    """unfolded.onnx computes every BatchNormalization itself, in the file and in the
    session that runs it; model.onnx has only the kept ones."""
    model = zoo.randomize_batch_norms(case.build(), seed=7)
    (tmp_path / "out").mkdir()
    report = fold_to_directory(model, tmp_path / "out")
    keras_count = batch_norm_count(model)
    assert report.exporter == "direct"
    assert report.onnx["unfolded"].op_counts.get("BatchNormalization", 0) == keras_count
    assert report.onnx["folded"].op_counts.get("BatchNormalization", 0) == case.not_folded
    loaded = _loaded_graph(tmp_path / "out" / "unfolded.onnx", tmp_path, unfolded=True)
    assert sum(node.op_type == "BatchNormalization" for node in loaded.node) == keras_count


def test_onnx_keeps_keras_names_and_a_dynamic_batch(tmp_path):
    fold_to_directory(zoo.randomize_batch_norms(zoo.multi_io_branches()), tmp_path)
    graph = onnx.load(tmp_path / "model.onnx").graph
    assert [i.name for i in graph.input] == ["left", "right"]
    model = zoo.multi_io_branches()
    assert [o.name for o in graph.output] == ["classes", "score_bn", "trunk"]
    for tensor in [*graph.input, *graph.output]:
        assert tensor.type.tensor_type.shape.dim[0].dim_value == 0
    names = [spec.name for spec in _specs(model)]
    rows = [np.ones((3, 10), np.float32), np.ones((3, 7), np.float32)]
    outputs = run_onnx(tmp_path / "model.onnx", names, rows)
    assert [out.shape[0] for out in outputs] == [3, 3, 3]


def test_kept_batch_norm_has_a_reason():
    result = fold_model(zoo.randomize_batch_norms(zoo.unfoldable()))
    reasons = {entry.bn: entry.reason for entry in result.not_folded}
    assert "padding 'same'" in reasons["bn_before_same_conv"]
    assert "activation 'relu'" in reasons["bn_before_relu"]


def test_training_true_call_is_kept(tmp_path):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4)(inputs)
    x = keras.layers.BatchNormalization(name="always_training")(x, training=True)
    model = zoo.randomize_batch_norms(keras.Model(inputs, x))
    result = fold_model(model)
    assert [entry.bn for entry in result.not_folded] == ["always_training"]
    assert "training=True" in result.not_folded[0].reason


# -- Keras 3 model code from a model library: keras-hub backbones, random weights ---------


def _hub_backbones():
    """A builder by name (``tests/hub_zoo.py``: tiny configs, random weights)."""

    def build(name: str) -> keras.Model:
        pytest.importorskip("keras_hub")
        from tests.hub_zoo import HUB

        return HUB[name]()

    return build


HUB_CONVNETS = ["resnet", "resnet_v2", "mobilenet", "cspdarknet", "efficientnet", "densenet"]


@pytest.mark.parametrize("name", HUB_CONVNETS)
def test_keras_hub_backbones_fold_directly_with_every_batch_norm_accounted_for(name, tmp_path):
    model = zoo.randomize_batch_norms(_hub_backbones()(name), seed=7)
    report = fold_to_directory(model, tmp_path)
    assert report.exporter == "direct"
    assert report.warnings == []
    assert len(report.folded) + len(report.not_folded) == batch_norm_count(model)
    assert report.folded
    assert all(entry.reason for entry in report.not_folded)
    assert report.verification.passed, report.summary()
