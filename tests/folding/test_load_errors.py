"""A Keras file that does not load says why on one line, and names --custom-objects
wherever an operator's module of custom objects would make it load."""

import json
import shutil
import zipfile

import h5py
import keras
import pytest

from folding.errors import ModelLoadError
from folding.sources.keras.loading import load_keras_model
from tests.folding.test_cli import assert_failed_cleanly, fold

HINT = "--custom-objects MODULE (FOLDSERVE_CUSTOM_OBJECTS on a server)"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One Sequential Dense -> BN model, as .keras and as .h5."""
    root = tmp_path_factory.mktemp("saved")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d"), keras.layers.BatchNormalization()]
    )
    model.save(root / "model.keras")
    model.save(root / "model.h5")
    return root


def edited(saved, target, edit):
    """A copy of the saved model whose Dense layer's config entry went through ``edit``."""
    source = saved / f"model{target.suffix}"
    if target.suffix == ".keras":
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
            for entry in original.infolist():
                data = original.read(entry)
                if entry.filename == "config.json":
                    config = json.loads(data)
                    edit(config["config"]["layers"][1])
                    data = json.dumps(config)
                copy.writestr(entry.filename, data)
        return target
    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config["config"]["layers"][1])
        handle.attrs["model_config"] = json.dumps(config)
    return target


def from_a_library(layer):
    layer.update(
        module="keras_hub.src.layers.modeling.foo_block",
        class_name="FooBlock",
        registered_name="keras_hub>FooBlock",
    )


def custom_activation(layer):
    layer["config"]["activation"] = {
        "module": "builtins",
        "class_name": "function",
        "config": "mish_like",
        "registered_name": "function",
    }


def unknown_class(layer):
    layer["class_name"] = "FooBlock"


def unknown_activation_name(layer):
    layer["config"]["activation"] = "mish_like"


@pytest.mark.parametrize(
    ("file_name", "edit", "reason"),
    [
        (
            "library.keras",
            from_a_library,
            "uses the class 'FooBlock' from the module 'keras_hub.src.layers.modeling.foo_block',"
            " which cannot be imported here",
        ),
        ("function.keras", custom_activation, "uses the custom function 'mish_like'"),
        ("unknown.keras", unknown_class, "uses the class 'keras.layers.FooBlock'"),
        ("unknown.h5", unknown_class, "uses the custom layer 'FooBlock'"),
        ("activation.h5", unknown_activation_name, "uses the activation function 'mish_like'"),
    ],
)
def test_what_a_custom_objects_module_would_fix_says_so(saved, tmp_path, file_name, edit, reason):
    path = edited(saved, tmp_path / file_name, edit)
    with pytest.raises(ModelLoadError) as raised:
        load_keras_model(path)
    message = str(raised.value)
    assert "\n" not in message
    assert reason in message and message.endswith(HINT)
    assert "config" not in message  # no config dump


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_other_failures_give_the_innermost_reason(saved, tmp_path, suffix):
    def unknown_option(layer):
        layer["config"]["foo_option"] = 1

    path = edited(saved, tmp_path / f"option{suffix}", unknown_option)
    with pytest.raises(ModelLoadError) as raised:
        load_keras_model(path)
    assert str(raised.value) == (
        f"'option{suffix}' could not be loaded as a Keras model: Dense: Unrecognized keyword "
        "arguments passed to Dense: {'foo_option': 1}"
    )


def test_the_cli_prints_the_reason_on_one_line(saved, tmp_path):
    path = edited(saved, tmp_path / "library.keras", from_a_library)
    out = tmp_path / "out"
    result = fold(path, "-o", out)
    assert_failed_cleanly(result, out, "from the module 'keras_hub.src.layers.modeling.foo_block'")
    assert HINT in result.stderr
