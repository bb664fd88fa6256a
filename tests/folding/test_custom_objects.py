"""Custom layers loaded through an operator's ``--custom-objects`` module."""

import json
import subprocess
import sys

import keras

from tests import zoo
from tests.custom_layers import Shift

FOLDSERVE = [sys.executable, "-m", "service.cli"]


def fold(*args):
    return subprocess.run(
        [*FOLDSERVE, "fold", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def save(model, path):
    zoo.randomize_batch_norms(model, seed=3).save(path)
    return path


def folded_with_custom_layers(path, out) -> dict:
    """The report of a fold of ``path`` with tests.custom_layers, which must pass."""
    result = fold(path, "-o", out, "--custom-objects", "tests.custom_layers")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"]
    return report


def test_custom_layer_between_dense_and_bn_keeps_the_bn(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.BatchNormalization(name="bn")(Shift()(keras.layers.Dense(5)(inputs)))
    path = save(keras.Model(inputs, keras.layers.ReLU()(hidden)), tmp_path / "between.keras")

    refused = fold(path, "-o", tmp_path / "refused")
    assert refused.returncode == 1
    assert "Shift" in refused.stderr
    assert not (tmp_path / "refused").exists()

    report = folded_with_custom_layers(path, tmp_path / "out")
    assert [entry["bn"] for entry in report["not_folded"]] == ["bn"]
    assert report["folded"] == []


def test_custom_layer_after_a_dense_bn_pair(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(5)(inputs))
    path = save(keras.Model(inputs, Shift()(hidden)), tmp_path / "after.keras")
    report = folded_with_custom_layers(path, tmp_path / "out")
    assert [entry["bn"] for entry in report["folded"]] == ["bn"]
    assert report["exporter"] == "direct"  # Shift's call (inputs + offset) is traced into
    assert report["warnings"] == []


def test_a_module_that_cannot_be_imported_is_named(tmp_path):
    result = fold(tmp_path / "x.keras", "-o", tmp_path / "out", "--custom-objects", "no_such_mod")
    assert result.returncode == 1
    assert "'no_such_mod' could not be imported" in result.stderr


def test_model_library_that_registers_nothing_loads_from_the_named_package(tmp_path):
    """kimm registers none of its classes: a saved kimm model names them by module path,
    which ``--custom-objects kimm`` makes trusted (as Keras trusts keras_hub's)."""
    import warnings

    import kimm

    with warnings.catch_warnings():  # kimm: no pretrained weights for 'None'
        warnings.simplefilter("ignore")
        model = kimm.models.RepVGGA0(input_shape=(32, 32, 3), weights=None, classes=4)
    path = save(model, tmp_path / "repvgg.keras")

    refused = fold(path, "-o", tmp_path / "refused")
    assert refused.returncode == 1
    assert "the class is in 'kimm." in refused.stderr
    assert "--custom-objects kimm" in refused.stderr
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "out"
    result = fold(path, "-o", out, "--custom-objects", "kimm", "--samples", "8")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"]
    assert report["exporter"] == "direct"
    assert len(report["folded"]) + len(report["not_folded"]) == 61  # every BN of RepVGGA0
    assert all(entry["reason"] for entry in report["not_folded"])


def test_trusted_classes_come_only_from_the_named_modules_and_are_defined_there():
    from folding.sources.keras.custom_objects import import_modules, trusted_classes

    import_modules("tests.custom_layers")
    named = {"module": "tests.custom_layers", "class_name": "Shift", "registered_name": "x>Shift"}
    assert trusted_classes({"layers": [named]}) == {"Shift": Shift, "x>Shift": Shift}
    elsewhere = [
        {"module": "keras.layers", "class_name": "Lambda"},  # not a module named by the operator
        {"module": "tests.custom_layers_x", "class_name": "Shift"},  # a prefix is not inside
        {"module": "tests.custom_layers", "class_name": "keras"},  # a module, not a class
        {"module": "tests", "class_name": "Shift"},  # above the named module
        {"module": "tests.custom_layers", "class_name": "ReexportedLambda"},  # not defined there
        {"module": "tests.custom_layers; import os", "class_name": "Shift"},
    ]
    assert trusted_classes({"layers": elsewhere}) == {}


def test_a_keras2_entry_without_module_finds_only_a_layer_the_package_defines():
    from folding.sources.keras.custom_objects import import_modules, trusted_classes

    import_modules("tests.custom_layers")
    entries = [
        {"class_name": name, "config": {}}
        for name in ("Shift", "Dense", "Model", "Settings", "ReexportedLambda", "Missing")
    ]
    # a Keras 2 file names no module: only Shift is a layer defined there that Keras lacks
    assert trusted_classes({"layers": entries}, by_name=True) == {"Shift": Shift}
    # a Keras 3 file names the module of every class: no lookup by name at all
    assert trusted_classes({"layers": entries}) == {}
