"""fp16 and int8 variants of a folded model, judged on a conv net trained on digits."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from tests.trained import plant_scale_spread, train_digits_conv

FOLDSERVE = [sys.executable, "-m", "service.cli"]


def fold(*args):
    return subprocess.run(
        [*FOLDSERVE, "fold", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float(np.mean(np.argmax(logits, axis=1) == labels))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return train_digits_conv(tmp_path_factory.mktemp("digits"))


def test_both_variants_keep_held_out_accuracy(digits, tmp_path):
    out = tmp_path / "out"
    result = fold(
        digits.model_path,
        "-o",
        out,
        "--precision",
        "fp16,int8",
        "--calibration",
        digits.calibration,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    variants = {entry["precision"]: entry for entry in report["variants"]}
    assert set(variants) == {"fp16", "int8"}
    baseline = accuracy(out / "model.onnx", digits.held_out, digits.labels)
    assert baseline > 0.95
    for precision, entry in variants.items():
        assert entry["passed"], entry
        assert entry["file"] == f"model.{precision}.onnx"
        assert entry["rows_source"] == "calibration"
        assert 0.98 <= entry["agreement"] <= 1.0
        assert set(entry["latency_ms"]) == {"batch 1", "batch 8"}
        held_out = accuracy(out / entry["file"], digits.held_out, digits.labels)
        assert abs(held_out - baseline) <= 0.01, (precision, held_out, baseline)
        assert f"{precision}: passed" in result.stdout
    int8 = onnxruntime.InferenceSession(str(out / "model.int8.onnx")).get_inputs()[0]
    assert int8.type == "tensor(float)"  # inputs and outputs stay float32
    fp16_model = (out / "model.fp16.onnx").stat().st_size
    assert fp16_model < 0.6 * (out / "model.onnx").stat().st_size


def test_equalization_rescues_a_planted_scale_spread(digits, tmp_path):
    planted = plant_scale_spread(digits.model_path, tmp_path / "planted.keras")
    plain, balanced = tmp_path / "plain", tmp_path / "balanced"
    common = ["--precision", "int8", "--calibration", digits.calibration]
    without = fold(planted, "-o", plain, *common)
    with_ = fold(planted, "-o", balanced, *common, "--equalize")
    assert without.returncode == 0 and with_.returncode == 0, without.stderr + with_.stderr
    [failed] = json.loads((plain / "report.json").read_text())["variants"]
    # the variant that missed its tolerance is written nowhere it could be served
    assert not failed["passed"] and failed["file"] is None
    assert not (plain / "model.int8.onnx").exists()
    assert "agreement" in failed["reason"]
    [rescued] = json.loads((balanced / "report.json").read_text())["variants"]
    assert rescued["passed"], rescued
    equalization = rescued["equalization"]
    assert equalization["pairs"] and equalization["pairs"][0]["spread_before"] > 100
    assert equalization["agreement_with"] > equalization["agreement_without"] + 0.2
    held_out = accuracy(balanced / "model.int8.onnx", digits.held_out, digits.labels)
    assert held_out >= accuracy(balanced / "model.onnx", digits.held_out, digits.labels) - 0.01


def test_probes_calibrate_when_no_rows_are_given_and_say_so(digits, tmp_path):
    out = tmp_path / "out"
    result = fold(digits.model_path, "-o", out, "--precision", "int8")
    assert result.returncode == 0, result.stderr
    [entry] = json.loads((out / "report.json").read_text())["variants"]
    assert entry["rows_source"] == "probes"
    assert any("weakly grounded" in note for note in entry["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int4"], "unknown precision 'int4'"),
        (["--equalize"], "--equalize applies to the int8 variant"),
        (["--precision", "fp16", "--equalize"], "--equalize applies to the int8 variant"),
        (["--calibration", "rows.npy"], "--calibration calibrates the --precision variants"),
    ],
)
def test_refusals_are_one_line(digits, tmp_path, args, message):
    out = tmp_path / "out"
    result = fold(digits.model_path, "-o", out, *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"foldserve: error: {message}"] or (
        message in result.stderr.strip().splitlines()[-1]
    ), result.stderr
    assert not out.exists()


def test_calibration_rows_of_the_wrong_shape_are_refused(digits, tmp_path):
    rows = tmp_path / "rows.npy"
    np.save(rows, np.zeros((4, 7), np.float32))
    out = tmp_path / "out"
    result = fold(digits.model_path, "-o", out, "--precision", "int8", "--calibration", rows)
    assert result.returncode != 0
    assert "shape [4, 7]" in result.stderr.strip().splitlines()[-1], result.stderr
    assert not out.exists()
