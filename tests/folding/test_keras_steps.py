"""Loading a .keras file with progress gives the model ``keras.models.load_model`` gives,
and reports how far it got: variables created, then weights read."""

import zipfile

import keras
import numpy as np
import pytest

from folding.errors import ModelLoadError
from folding.sources.keras.loading import load_keras_model
from folding.sources.keras.steps import BUILT, in_steps


def conv_model() -> keras.Model:
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:  # statistics that are not the initial ones
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.linspace(-1, 1, channels))
            layer.moving_variance.assign(np.linspace(0.5, 2, channels))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("steps") / "conv.keras"
    conv_model().save(path)
    return path


def test_progress_runs_from_zero_through_built_to_one_and_the_model_is_the_same(saved):
    reports = []
    model = load_keras_model(saved, progress=reports.append)
    reference = keras.models.load_model(saved, compile=False, safe_mode=True)

    assert reports[0] == 0.0 and BUILT in reports and reports[-1] == 1.0
    assert reports == sorted(reports)
    building = [fraction for fraction in reports if 0.0 < fraction < BUILT]
    reading = [fraction for fraction in reports if BUILT < fraction < 1.0]
    assert building, f"no progress while the model was built: {reports}"
    assert reading, f"no progress while the weights were read: {reports}"
    assert model.get_config() == reference.get_config()
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    image = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model(image)), np.asarray(reference(image)))


def test_an_archive_with_more_than_config_metadata_and_weights_goes_to_load_model(saved, tmp_path):
    extra = tmp_path / "extra.keras"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(extra, "w") as target:
        for entry in source.infolist():
            target.writestr(entry, source.read(entry))
        target.writestr("assets/vocabulary.txt", "a\nb\n")
    assert in_steps(saved) and not in_steps(extra)
    reports = []
    load_keras_model(extra, progress=reports.append)
    assert reports == []  # loaded in one call, which reports nothing


def test_weights_that_do_not_fit_the_model_are_a_load_error(saved, tmp_path):
    other = tmp_path / "other.keras"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(other, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "config.json":  # 8 filters where the weights have 16
                data = data.replace(b'"filters": 16', b'"filters": 8')
            target.writestr(entry, data)
    with pytest.raises(ModelLoadError, match="could not be loaded as a Keras model"):
        load_keras_model(other, progress=lambda fraction: None)
