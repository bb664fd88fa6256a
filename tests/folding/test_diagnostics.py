"""BN diagnostics and recalibration: planted problems are flagged, clean models are not,
and recalibration works through the CLI and through an upload to a real server."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
from keras import layers

from folding.diagnostics import FLOAT16_MAX, SCALE_SPREAD_LIMIT, VARIANCE_SHIFT_LIMIT
from folding.keras_graph.fold import fold_model
from tests import zoo
from tests.helpers import compared_output
from tests.service.conftest import make_repository, serving

FOLDSERVE = [sys.executable, "-m", "service.cli"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target


def mlp(dropout_before_bn: bool = False) -> keras.Model:
    """Dense -> [Dropout ->] BN -> ReLU -> Dense -> BN -> ReLU -> Dense(softmax)."""
    first = [layers.Dense(64)]
    if dropout_before_bn:
        first.append(layers.Dropout(0.5))
    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            *first,
            layers.BatchNormalization(name="bn_1"),
            layers.Activation("relu"),
            layers.Dense(32),
            layers.BatchNormalization(name="bn_2"),
            layers.Activation("relu"),
            layers.Dense(10, activation="softmax", name="probabilities"),
        ]
    )


def trained(digits, dropout_before_bn: bool) -> keras.Model:
    x, y = digits
    keras.utils.set_random_seed(3)
    model = mlp(dropout_before_bn)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=10, verbose=0)
    return model


@pytest.fixture(scope="module")
def dropout_first_file(digits, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dropout") / "dropout_first.keras"
    trained(digits, dropout_before_bn=True).save(path)
    return path


@pytest.fixture(scope="module")
def calibration_file(digits, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "digits.npy"
    np.save(path, digits[0])
    return path


def diagnostics_by_bn(result) -> dict:
    return {entry.bn: entry.diagnostics for entry in [*result.folded, *result.not_folded]}


def planted(change) -> keras.Model:
    """``mlp()`` with sane random BN statistics, then ``change(bn_1)`` applied."""
    model = zoo.randomize_batch_norms(mlp(), seed=5, variance=(0.5, 2.0))
    bn = model.get_layer("bn_1")
    change(bn)
    return model


def set_channels(variable, indices, value):
    values = np.asarray(variable.numpy()).copy()
    values[indices] = value
    variable.assign(values)


@pytest.mark.parametrize(
    "case", [zoo.seed_mlp, zoo.conv2d_no_bias, zoo.forward_after_activation, zoo.unfoldable]
)
def test_clean_models_flag_nothing(case):
    model = zoo.randomize_batch_norms(case(), seed=4, variance=(0.5, 2.0))
    result = fold_model(model)
    diagnostics = diagnostics_by_bn(result)
    assert diagnostics and all(d is not None for d in diagnostics.values())
    for name, found in diagnostics.items():
        assert found.flags == [], name
        assert found.dead_channels == [] and found.tiny_variance_channels == []
        assert not found.fp16_overflow
        assert found.variance_shift is None


def test_zeroed_gammas_are_dead_channels():
    model = planted(lambda bn: set_channels(bn.gamma, [3, 17], 0.0))
    found = diagnostics_by_bn(fold_model(model))
    assert found["bn_1"].dead_channels == [3, 17]
    assert any("2 dead channel(s) [3, 17]" in flag for flag in found["bn_1"].flags)
    assert found["bn_2"].flags == []


def test_tiny_variances_are_flagged():
    model = planted(lambda bn: set_channels(bn.moving_variance, [0, 9], 1e-6))
    found = diagnostics_by_bn(fold_model(model))["bn_1"]
    assert found.tiny_variance_channels == [0, 9]
    assert any("moving_variance < 10 x epsilon" in flag for flag in found.flags)


def test_one_huge_scale_is_flagged():
    model = planted(lambda bn: set_channels(bn.gamma, [5], 500.0))
    found = diagnostics_by_bn(fold_model(model))["bn_1"]
    assert found.scale_spread > SCALE_SPREAD_LIMIT
    assert any("scale spread" in flag for flag in found.flags)
    assert not found.fp16_overflow


def test_fp16_overflow_of_the_folded_bias():
    model = planted(lambda bn: set_channels(bn.beta, [2], 2 * FLOAT16_MAX))
    result = fold_model(model)
    found = diagnostics_by_bn(result)["bn_1"]
    assert found.fp16_overflow
    assert any("float16" in flag for flag in found.flags)
    folded_bias = result.model.layers[1].bias.numpy()
    assert np.max(np.abs(folded_bias)) > FLOAT16_MAX


def test_dropout_before_bn_shifts_the_variance_and_recalibration_removes_it(digits):
    x, _ = digits
    model = trained(digits, dropout_before_bn=True)
    found = diagnostics_by_bn(fold_model(model, calibration=[x]))
    assert found["bn_1"].variance_shift > VARIANCE_SHIFT_LIMIT
    assert any("variance shift" in flag for flag in found["bn_1"].flags)

    recalibrated = fold_model(model, recalibrate_on=[x])
    after = diagnostics_by_bn(recalibrated)
    assert all(abs(d.variance_shift - 1) < 1e-3 and d.flags == [] for d in after.values())
    layers_before = {layer.bn: layer for layer in recalibrated.recalibration.layers}
    assert layers_before["bn_1"].variance_shift_before == pytest.approx(
        found["bn_1"].variance_shift
    )
    assert recalibrated.recalibration.samples == len(x)


def test_a_clean_trained_model_shows_no_variance_shift(digits):
    x, _ = digits
    found = diagnostics_by_bn(fold_model(trained(digits, dropout_before_bn=False), [x]))
    for name, diagnostics in found.items():
        assert 1 <= diagnostics.variance_shift <= VARIANCE_SHIFT_LIMIT, name
        assert diagnostics.flags == [], name


def test_recalibrated_model_matches_recomputed_statistics(digits):
    """After recalibration each BN's moving statistics are its input's mean and
    variance at inference, measured here independently with a Keras sub-model."""
    x, _ = digits
    model = trained(digits, dropout_before_bn=True)
    fold_model(model, recalibrate_on=[x])
    for name in ("bn_1", "bn_2"):
        bn = model.get_layer(name)
        feeding = keras.Model(model.inputs, bn.input)
        values = np.asarray(feeding([x], training=False), dtype=np.float64)
        np.testing.assert_allclose(bn.moving_mean.numpy(), values.mean(axis=0), rtol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), values.var(axis=0), rtol=1e-3)


def fold_cli(*args):
    return subprocess.run(
        [*FOLDSERVE, "fold", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_probe_prints_flags_and_recalibrate_fixes_them(
    dropout_first_file, calibration_file, tmp_path
):
    probed = fold_cli(dropout_first_file, "-o", tmp_path / "probed", "--probe", calibration_file)
    assert probed.returncode == 0, probed.stderr
    assert "diagnostics: 1 of 2 BNs flagged" in probed.stdout
    assert "bn_1: variance shift" in probed.stdout
    report = json.loads((tmp_path / "probed" / "report.json").read_text())
    assert list(report)[:2] == ["model", "diagnostics_summary"]
    assert report["diagnostics_summary"]["flagged"] == 1
    assert report["recalibration"] is None

    out = tmp_path / "recalibrated"
    result = fold_cli(dropout_first_file, "-o", out, "--recalibrate", calibration_file)
    assert result.returncode == 0, result.stderr
    assert "recalibrated 2 BNs on 1797 samples" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["diagnostics_summary"] == {"checked": 2, "flagged": 0, "flags": {}}
    layers_after = {layer["bn"]: layer for layer in report["recalibration"]["layers"]}
    assert layers_after["bn_1"]["variance_shift_before"] > VARIANCE_SHIFT_LIMIT
    assert layers_after["bn_1"]["before"] != layers_after["bn_1"]["after"]
    for entry in report["folded"]:
        assert entry["diagnostics"]["variance_shift"] == pytest.approx(1, abs=1e-3)
    assert report["verification"]["passed"]


def test_cli_refuses_calibration_of_the_wrong_shape(dropout_first_file, tmp_path):
    data = tmp_path / "wrong.npy"
    np.save(data, np.zeros((4, 3), np.float32))
    out = tmp_path / "out"
    result = fold_cli(dropout_first_file, "-o", out, "--recalibrate", data)
    assert result.returncode == 1
    assert "calibration data: probe input 'pixels' has shape [4, 3]" in result.stderr
    assert not out.exists()


def test_upload_with_recalibrate_recalibrates(
    dropout_first_file, calibration_file, digits, tmp_path
):
    x, _ = digits
    with serving(make_repository(tmp_path)) as server:

        def upload(name, rows=None, field="recalibrate"):
            files = {"file": (dropout_first_file.name, dropout_first_file.read_bytes())}
            if rows is not None:
                files[field] = rows
            return httpx.post(
                f"{server.url}/v1/models?wait=true", files=files, data={"name": name}, timeout=300
            )

        reply = upload("recalibrated", ("digits.npy", calibration_file.read_bytes()))
        assert reply.status_code == 201, reply.text
        report = reply.json()["report"]
        assert report["recalibration"]["samples"] == len(x)
        assert report["diagnostics_summary"]["flagged"] == 0
        version_dir = tmp_path / "models" / "recalibrated" / "1"
        assert not [p for p in version_dir.iterdir() if "calibrat" in p.name]
        stored = json.loads((version_dir / "report.json").read_text())
        assert stored["recalibration"] == report["recalibration"]

        plain = upload("plain")
        assert plain.status_code == 201, plain.text
        assert plain.json()["report"]["recalibration"] is None

        rows = x[:8].tolist()
        predictions = {}
        for name in ("recalibrated", "plain"):
            answer = httpx.post(
                f"{server.url}/v1/models/{name}:predict", json={"instances": rows}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            predictions[name] = np.asarray(answer.json()["predictions"])
        assert not np.allclose(predictions["recalibrated"], predictions["plain"], atol=1e-3)
        body = {"instances": rows, "reference": "keras"}
        output = compared_output(server, "recalibrated", body, timeout=120)
        assert output["max_abs_diff"] < 1e-5

        wrong = upload("wrong", ("digits.npy", _npy_bytes(np.zeros((4, 3), np.float32))))
        assert wrong.status_code == 400, wrong.text
        assert "recalibrate" in wrong.json()["error"]
        assert "shape [4, 3]" in wrong.json()["error"]
        # 'calibration' is quantization calibration: without 'precision' it is refused,
        # saying which field re-estimates the BN statistics
        unused = upload("unused", ("digits.npy", calibration_file.read_bytes()), "calibration")
        assert unused.status_code == 400, unused.text
        assert "'recalibrate'" in unused.json()["error"]
        text = upload("text", ("digits.txt", b"1 2 3"))
        assert text.status_code == 400
        assert "not a .npy or .npz" in text.json()["error"]
        assert not (tmp_path / "models" / "wrong").exists()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
