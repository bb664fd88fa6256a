"""Tiny SavedModels written the three ways users write them, with trained-looking BNs."""

from __future__ import annotations

import base64
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np


def _randomise_batchnorms(model, layer_type) -> None:
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layer_type):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.3, beta.shape).astype("float32"),
                    rng.normal(0, 0.3, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, variance.shape).astype("float32"),
                ]
            )


def _keras3_export(path: Path, *layers) -> Path:
    """Keras 3 ``model.export`` (tf_saved_model) of a Sequential of ``layers``, BNs
    randomised."""
    import keras

    model = keras.Sequential(list(layers))
    _randomise_batchnorms(model, keras.layers.BatchNormalization)
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def keras3_dense(path: Path) -> Path:
    """Keras 3 ``model.export`` (tf_saved_model) of Dense -> BN -> ReLU -> Dense."""
    import keras

    layers = keras.layers
    return _keras3_export(
        path,
        keras.Input((6,)),
        layers.Dense(8),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dense(3),
    )


def _conv_layers(framework) -> list:
    """Conv -> BN -> ReLU -> pool -> Dense on 8x8x3, in ``framework`` (keras or tf_keras)."""
    layers = framework.layers
    return [
        framework.Input((8, 8, 3)),
        layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2),
    ]


def keras3_conv(path: Path) -> Path:
    import keras

    return _keras3_export(path, *_conv_layers(keras))


def tf_keras_conv(path: Path) -> Path:
    """tf.keras 2 (``tf_keras``) ``model.save(path)``: FusedBatchNormV3 in the graph."""
    import tf_keras

    model = tf_keras.Sequential(_conv_layers(tf_keras))
    _randomise_batchnorms(model, tf_keras.layers.BatchNormalization)
    model.save(str(path))
    return path


def tf_keras_two_inputs(path: Path) -> Path:
    import tf_keras

    layers = tf_keras.layers
    left = tf_keras.Input((4,), name="left")
    right = tf_keras.Input((3,), name="right")
    hidden = layers.BatchNormalization()(layers.Dense(5)(left))
    merged = layers.Concatenate()([hidden, right])
    model = tf_keras.Model([left, right], layers.Dense(2, name="score")(merged))
    _randomise_batchnorms(model, layers.BatchNormalization)
    model.save(str(path))
    return path


def tf_module_two_inputs(path: Path) -> Path:
    """``tf.saved_model.save`` of a tf.Module: MatMul -> batch_normalization, two inputs."""
    import tensorflow as tf

    class TwoInputs(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(2)
            self.weight = tf.Variable(rng.normal(size=(5, 4)).astype("float32"))
            self.mean = tf.Variable(rng.normal(size=4).astype("float32"))
            self.variance = tf.Variable(rng.uniform(0.5, 2, size=4).astype("float32"))
            self.gamma = tf.Variable(rng.uniform(0.5, 1.5, size=4).astype("float32"))
            self.beta = tf.Variable(rng.normal(size=4).astype("float32"))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 5], tf.float32, name="features"),
                tf.TensorSpec([None, 4], tf.float32, name="offset"),
            ]
        )
        def serve(self, features, offset):
            hidden = tf.matmul(features, self.weight)
            normal = tf.nn.batch_normalization(
                hidden, self.mean, self.variance, self.beta, self.gamma, 1e-3
            )
            return {"out": tf.nn.relu(normal) + offset}

    module = TwoInputs()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def tf_module_embedding(path: Path) -> Path:
    """A tf.Module with an int32 input: ids looked up in a variable (``ResourceGather``),
    averaged, then MatMul -> batch_normalization."""
    import tensorflow as tf

    class Embedding(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(3)
            self.table = tf.Variable(rng.normal(size=(50, 6)).astype("float32"))
            self.weight = tf.Variable(rng.normal(size=(6, 4)).astype("float32"))
            self.mean = tf.Variable(rng.normal(size=4).astype("float32"))
            self.variance = tf.Variable(rng.uniform(0.5, 2, size=4).astype("float32"))
            self.gamma = tf.Variable(rng.uniform(0.5, 1.5, size=4).astype("float32"))
            self.beta = tf.Variable(rng.normal(size=4).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.int32, name="ids")])
        def serve(self, ids):
            pooled = tf.reduce_mean(tf.gather(self.table, ids), axis=1)
            hidden = tf.matmul(pooled, self.weight)
            normal = tf.nn.batch_normalization(
                hidden, self.mean, self.variance, self.beta, self.gamma, 1e-3
            )
            return {"out": normal}

    module = Embedding()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def keras3_normalization(path: Path) -> Path:
    """Keras 3 ``model.export()`` of Normalization (fixed mean / variance, which the
    serving function captures as constant tensors, as EfficientNet's) -> Dense -> BN."""
    import keras

    inputs = keras.Input((8,))
    x = keras.layers.Normalization(
        mean=np.arange(8, dtype="float32"), variance=np.arange(1, 9, dtype="float32")
    )(inputs)
    x = keras.layers.BatchNormalization()(keras.layers.Dense(6)(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.ReLU()(x)))
    _randomise_batchnorms(model, keras.layers.BatchNormalization)
    model.export(str(path), verbose=False)
    return path


def writes_a_file(path: Path, victim: Path) -> Path:
    """A SavedModel whose serving function writes ``victim`` when it runs."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            tf.io.write_file(str(victim), "the serving function ran")
            return {"y": x * 2.0}

    module = Writer()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def writes_a_file_on_load(path: Path, victim: Path) -> Path:
    """A SavedModel with a harmless serving function and a resource whose initialiser
    (run by ``tf.saved_model.load`` itself) writes ``victim`` through a tf.data op."""
    import tensorflow as tf

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="resource")

        def _initialize(self):
            dataset = tf.data.Dataset.from_tensors(tf.constant("written on load"))
            tf.raw_ops.ExperimentalDatasetToTFRecord(
                input_dataset=dataset._variant_tensor, filename=str(victim), compression_type=""
            )

    return doubling(path, Resource())


def doubling(path: Path, resource=None) -> Path:
    """A tf.Module serving ``y = 2x`` (x: [None, 3] float32), holding ``resource`` (a
    TrackableResource, whose initialiser ``tf.saved_model.load`` runs) where one is given."""
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            if resource is not None:
                self.resource = resource

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def with_a_lookup_table(path: Path) -> Path:
    """A SavedModel holding an in-memory lookup table (initialised from constants on load)
    beside a MatMul serving function."""
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            keys, values = tf.constant([1, 2], tf.int64), tf.constant([0.5, 1.5])
            initializer = tf.lookup.KeyValueTensorInitializer(keys, values)
            self.table = tf.lookup.StaticHashTable(initializer, -1.0)
            self.weight = tf.Variable(np.ones((3, 2), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.weight)}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def zipped(directory: Path, top_folder: str | None = None) -> bytes:
    """``directory`` as a .zip, at the root or inside ``top_folder``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                relative = path.relative_to(directory).as_posix()
                archive.write(path, f"{top_folder}/{relative}" if top_folder else relative)
    return buffer.getvalue()


def tarred(directory: Path, top_folder: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=top_folder or ".")
    return buffer.getvalue()


def signature_answers(directory: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the SavedModel's own serving function answers."""
    import tensorflow as tf

    function = tf.saved_model.load(str(directory)).signatures["serving_default"]
    result = function(**{key: tf.constant(value) for key, value in arrays.items()})
    return {key: value.numpy() for key, value in result.items()}


def retarget_signature_outputs(path: Path, tensor_name: str = "no_such_node:0") -> Path:
    """Point every output of every ``signature_def`` at a tensor no node produces (the
    loader runs the object graph's functions and never looks at these names)."""

    def edit(meta):
        for signature in meta.signature_def.values():
            for output in signature.outputs.values():
                output.name = tensor_name

    return edit_saved_model(path, edit)


def hides_a_dataset(
    path: Path, secret: Path, victim: Path, *, asserts: bool = False, encoded: bool = False
) -> Path:
    """A SavedModel whose serving function runs a ``DatasetFromGraph``: a serialized graph
    (a string constant) holding ``TextLineDataset(secret)`` mapped through ``WriteFile``
    into ``victim`` (or, ``asserts``, through an ``Assert`` whose message is the line read);
    its ``signature_def`` output names match no node. ``encoded``: the graph is a base64
    constant decoded when the function runs."""
    import tensorflow as tf

    def leak(line):
        if asserts:
            check = tf.debugging.Assert(tf.equal(line, "never"), [line])
            with tf.control_dependencies([check]):
                return tf.identity(line)
        with tf.control_dependencies([tf.io.write_file(str(victim), line)]):
            return tf.identity(line)

    dataset = tf.data.TextLineDataset(str(secret)).take(1).map(leak)
    graph = dataset._as_serialized_graph(
        external_state_policy=tf.data.experimental.ExternalStatePolicy.WARN
    ).numpy()
    text = base64.urlsafe_b64encode(graph).decode()

    class Hider(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            if encoded:  # depends on the input, so no constant folding runs it early
                whole = tf.maximum(tf.shape(x)[0], len(graph))
                serialized = tf.strings.substr(tf.io.decode_base64(tf.constant(text)), 0, whole)
            else:
                serialized = tf.constant(graph)
            variant = tf.raw_ops.DatasetFromGraph(graph_def=serialized)
            hidden = tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.string))
            with tf.control_dependencies([hidden.get_single_element()]):
                return {"y": tf.identity(x * 2.0)}

    module = Hider()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return retarget_signature_outputs(path)


def fails_on_probes(path: Path) -> Path:
    """A SavedModel that converts to ONNX but whose serving function fails on negative
    inputs: ``CheckNumerics`` of ``log(x)``."""
    import tensorflow as tf

    class Logger(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.debugging.check_numerics(tf.math.log(x), "log of the input")}

    module = Logger()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def edit_saved_model(path: Path, edit) -> Path:
    """Rewrite ``path``'s saved_model.pb with ``edit(meta_graph)`` applied."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    message = saved_model_pb2.SavedModel()
    message.ParseFromString(pb.read_bytes())
    for meta in message.meta_graphs:
        edit(meta)
    pb.write_bytes(message.SerializeToString())
    return path
