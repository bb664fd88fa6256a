"""`foldserve fold SAVED_MODEL_DIR` as a user runs it, checked against the SavedModel."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

from tests import saved_models as build

FOLDSERVE = [sys.executable, "-m", "service.cli"]


def fold(*args):
    return subprocess.run(
        [*FOLDSERVE, "fold", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def probe_inputs(session, rows=5):
    rng = np.random.default_rng(7)
    return {
        value.name: rng.standard_normal(
            [rows, *[d if isinstance(d, int) else 1 for d in value.shape[1:]]]
        ).astype(np.float32)
        for value in session.get_inputs()
    }


BN_OPS = {"BatchNormalization", "Mul"}


@pytest.mark.parametrize(
    "which",
    ["keras3_dense", "keras3_conv", "tf_keras_conv", "tf_keras_two_inputs", "tf_module_two_inputs"],
)
def test_saved_model_folds_and_answers_like_its_signature(saved_models, which, tmp_path):
    out = tmp_path / "out"
    result = fold(saved_models[which], "-o", out, "--samples", "16")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json", "unfolded.onnx"]
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"]
    assert report["exporter"] == "tf2onnx"
    assert report["folded"], "every BN here sits beside a MatMul or Conv"
    assert report["not_folded"] == []
    # unfolded.onnx is honest: the BN is still its own op there, and gone from model.onnx
    unfolded_ops = {node.op_type for node in onnx.load(str(out / "unfolded.onnx")).graph.node}
    folded_ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert unfolded_ops & BN_OPS
    assert not folded_ops & BN_OPS
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    feed = probe_inputs(session)
    expected = build.signature_answers(saved_models[which], feed)
    answers = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True)
    )
    assert sorted(answers) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(answers[key], value, rtol=1e-4, atol=1e-5)


def folded_into_one_matmul(model, out) -> onnxruntime.InferenceSession:
    """Fold ``model`` into ``out`` (16 probes), which must succeed with its one BN folded
    into a MatMul; a session of the folded model."""
    result = fold(model, "-o", out, "--samples", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [entry["into_class"] for entry in report["folded"]] == ["MatMul"]
    return onnxruntime.InferenceSession(str(out / "model.onnx"))


def test_embedding_lookup_with_int_ids_folds(tmp_path):
    """tf.gather on a variable is a ResourceGather in the SavedModel, a Gather once frozen."""
    model = build.tf_module_embedding(tmp_path / "embedding")
    session = folded_into_one_matmul(model, tmp_path / "out")
    ids = np.random.default_rng(5).integers(0, 50, size=(7, 5)).astype(np.int32)
    (answer,) = session.run(None, {"ids": ids})
    expected = build.signature_answers(model, {"ids": ids})["out"]
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)


def test_signature_that_captures_constant_tensors_folds(tmp_path):
    """Captured constants are not signature inputs (EfficientNet was refused for them)."""
    model = build.keras3_normalization(tmp_path / "normalized")
    session = folded_into_one_matmul(model, tmp_path / "out")
    feed = probe_inputs(session)
    (answer,) = session.run(None, feed)
    (expected,) = build.signature_answers(model, feed).values()
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)


def test_unknown_signature_is_named(saved_models, tmp_path):
    out = tmp_path / "out"
    result = fold(saved_models["keras3_dense"], "-o", out, "--signature", "nope")
    assert result.returncode == 1
    assert "no signature 'nope'" in result.stderr
    assert "serving_default" in result.stderr
    assert not out.exists()


def test_a_directory_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "empty").mkdir()
    result = fold(tmp_path / "empty", "-o", tmp_path / "out")
    assert result.returncode == 1
    assert "not a SavedModel" in result.stderr


@pytest.mark.parametrize(
    ("write", "victim_name", "named"),
    [
        (build.writes_a_file, "written.txt", ["'WriteFile'"]),
        (
            build.writes_a_file_on_load,
            "written.tfrecord",
            ["resource's initialiser", "nothing in it was run"],
        ),
    ],
    ids=["when_served_never_runs", "on_load_never_loads"],
)
def test_saved_model_that_writes_a_file(tmp_path, write, victim_name, named):
    victim = tmp_path / victim_name
    model = write(tmp_path / "writer", victim)
    out = tmp_path / "out"
    result = fold(model, "-o", out)
    assert result.returncode == 1
    for words in named:
        assert words in result.stderr
    assert not victim.exists()
    assert not out.exists()


def test_saved_model_with_a_lookup_table_loads(tmp_path):
    out = tmp_path / "out"
    result = fold(build.with_a_lookup_table(tmp_path / "table"), "-o", out, "--samples", "8")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "report.json").read_text())["verification"]["passed"]
