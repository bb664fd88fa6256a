"""An operator's module of custom Keras layers, imported with ``--custom-objects``."""

import keras
from keras.layers import Lambda as ReexportedLambda  # noqa: F401 - must not be trusted


@keras.saving.register_keras_serializable(package="foldserve_tests")
class Shift(keras.layers.Layer):
    """Adds a fixed offset: no weights, no direct ONNX form."""

    def __init__(self, offset: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, inputs):
        return inputs + self.offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


class Dense(keras.layers.Layer):
    """Shares its name with a Keras layer: a file naming ``Dense`` never gets this one."""


class Settings:
    """Not a layer, though it has ``from_config``: never looked up for a file's entry."""

    @classmethod
    def from_config(cls, config):
        return cls()
