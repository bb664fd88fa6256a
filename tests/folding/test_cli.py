"""`foldserve fold` as a user runs it: a subprocess, real files."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from tests import zoo

FOLDSERVE = [sys.executable, "-m", "service.cli"]


def fold(*args):
    return subprocess.run(
        [*FOLDSERVE, "fold", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def seed_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "seed.keras"
    zoo.randomize_batch_norms(zoo.seed_mlp(), seed=2).save(path)
    return path


def assert_failed_cleanly(result, out: Path, message: str):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_fold_writes_both_exports_and_the_report(seed_model_file, tmp_path):
    out = tmp_path / "out"
    result = fold(seed_model_file, "-o", out, "--samples", "16", "--opset", "15")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json", "unfolded.onnx"]
    report = json.loads((out / "report.json").read_text())
    assert [entry["direction"] for entry in report["folded"]] == ["backward", "backward"]
    assert [entry["class_name"] for entry in report["removed"]] == ["Dropout"]
    assert report["verification"]["samples"] == 16
    assert "folded backward" in result.stdout
    assert "verification passed" in result.stdout


def test_legacy_h5_folds(tmp_path):
    path = tmp_path / "legacy.h5"
    zoo.randomize_batch_norms(zoo.conv2d_no_bias()).save(path)
    result = fold(path, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verification"]["passed"]


def test_missing_file(tmp_path):
    out = tmp_path / "out"
    assert_failed_cleanly(fold(tmp_path / "absent.keras", "-o", out), out, "no such file")


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("notes.txt", b"hello", "not a Keras model file"),
        ("broken.keras", b"not a zip archive", "not a valid .keras archive"),
        ("broken.h5", b"not hdf5 either", "not a valid HDF5 file"),
    ],
)
def test_not_a_keras_model(tmp_path, file_name, content, message):
    path = tmp_path / file_name
    path.write_bytes(content)
    out = tmp_path / "out"
    assert_failed_cleanly(fold(path, "-o", out), out, message)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_and_never_run(tmp_path, suffix):
    marker = tmp_path / "executed"

    def doubler(x):
        marker.touch()
        return x * 2

    inputs = keras.Input((3,))
    outputs = keras.layers.Lambda(doubler, name="doubler")(inputs)
    path = tmp_path / f"unsafe{suffix}"
    keras.Model(inputs, outputs).save(path)
    marker.unlink()
    out = tmp_path / "out"
    assert_failed_cleanly(fold(path, "-o", out), out, "Lambda layer 'doubler'")
    assert not marker.exists()


def test_verification_over_tolerance_writes_nothing(seed_model_file, tmp_path):
    out = tmp_path / "out"
    strict = fold(seed_model_file, "-o", out, "--rtol", "1e-15", "--noise-factor", "0")
    assert_failed_cleanly(strict, out, "folding changed output")
    assert "rtol 1e-15" in strict.stderr


def test_float32_noise_is_not_blamed_on_folding(seed_model_file, tmp_path):
    """A fold error over a tiny rtol but within the model's own float32 noise passes,
    and the report says how large that noise is."""
    result = fold(seed_model_file, "-o", tmp_path / "out", "--rtol", "1e-15")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (check,) = report["verification"]["outputs"]
    assert 1e-15 < check["fold_error"] <= check["fold_limit"]
    assert check["noise"] > 0 and check["fold_limit"] == 10 * check["noise"]
    assert report["verification"]["verdict"] == "passed"
    for column in ("fold", "export", "total", "noise"):
        assert column in result.stdout


def test_user_probe_file(seed_model_file, tmp_path):
    import numpy as np

    probe = tmp_path / "probe.npy"
    np.save(probe, np.random.default_rng(0).uniform(0, 16, (5, 64)).astype(np.float32))
    result = fold(seed_model_file, "-o", tmp_path / "out", "--probe", probe)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verification"]["samples"] == 5


def test_probe_of_wrong_shape(seed_model_file, tmp_path):
    import numpy as np

    probe = tmp_path / "probe.npy"
    np.save(probe, np.zeros((5, 63), np.float32))
    out = tmp_path / "out"
    assert_failed_cleanly(fold(seed_model_file, "-o", out, "--probe", probe), out, "[5, 63]")
