"""An operator's module for a Keras 2 file's custom layer: the Keras 3 class of the
name the file records (``tests/keras2_models.custom_gain``), imported with
``--custom-objects tests.keras2_custom_layers``. Not registered: a Keras 2 file names
its classes only, and foldserve looks the name up in the operator's modules."""

import keras


class ChannelGain(keras.layers.Layer):
    """Each channel times a learned gain."""

    def build(self, input_shape):
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gain
