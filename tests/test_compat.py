"""The private framework APIs of ``folding._compat`` and ``service._compat``, each run for
real, and the versions they were written against: an upgrade of Keras, TensorFlow,
tf2onnx, ONNX Runtime or uvicorn that changes one of them fails here, naming what moved."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import importlib.metadata
import io
import re
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from folding import _compat as folding_compat
from service import _compat as service_compat

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _installed(library: str) -> tuple[str, str]:
    """(distribution, version) of ``library``; ONNX Runtime is either distribution."""
    names = ("onnxruntime-gpu", "onnxruntime") if library == "onnxruntime" else (library,)
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    pytest.fail(f"{library} is not installed, though a _compat module uses its internals")


def _pins(distribution: str) -> set[str]:
    """Every exact version pyproject.toml pins ``distribution`` to."""
    text = PYPROJECT.read_text()
    pattern = rf'"{re.escape(distribution)}(?:\[[^\]]*\])?==([^";\s]+)'
    return set(re.findall(pattern, text))


WRITTEN = [
    *(("folding/_compat.py", lib, v) for lib, v in folding_compat.WRITTEN_AGAINST.items()),
    *(("service/_compat.py", lib, v) for lib, v in service_compat.WRITTEN_AGAINST.items()),
]


@pytest.mark.parametrize(("module", "library", "written"), WRITTEN, ids=[w[1] for w in WRITTEN])
def test_the_installed_version_is_the_pinned_one_the_quarantine_was_written_against(
    module, library, written
):
    distribution, installed = _installed(library)
    pins = _pins(distribution)
    assert pins, f"pyproject.toml does not pin {distribution} exactly (==); {module} uses it"
    assert pins == {written} and installed == written, (
        f"{distribution}: installed {installed}, pinned {' / '.join(sorted(pins))} in "
        f"pyproject.toml, {module} written against {written}. After an upgrade, check every "
        f"function of {module} against the new {distribution}, then move the pin and "
        "WRITTEN_AGAINST together."
    )


def test_the_images_cpu_onnx_runtime_is_the_pinned_version():
    dockerfile = (PYPROJECT.parent / "Dockerfile").read_text()
    spec = re.search(r'ARG ONNXRUNTIME_SPEC="([^"]+)"', dockerfile)
    written = service_compat.WRITTEN_AGAINST["onnxruntime"]
    assert spec and spec.group(1) == f"onnxruntime=={written}", (
        f"the Dockerfile installs {spec and spec.group(1)}; service/_compat.py was written "
        f"against onnxruntime {written}"
    )


# -- Keras -----------------------------------------------------------------------------------


def _dense_bn(name: str = "block"):
    import keras

    return keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()], name=name)


def test_the_layer_graph_behind_sequential_and_functional_models():
    import keras

    unbuilt = _dense_bn()
    assert folding_compat.functional_of_sequential(unbuilt) is None
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    inner = folding_compat.functional_of_sequential(sequential)
    assert folding_compat.is_functional(inner)
    assert not folding_compat.is_functional(sequential)

    left, right = keras.Input((3,), name="left"), keras.Input((4,), name="right")
    block = _dense_bn()
    out = keras.layers.Add()([block(left), keras.ops.multiply(right, 2.0)])
    model = keras.Model({"left": left, "right": right}, out)
    assert folding_compat.is_functional(model)

    by_depth = folding_compat.nodes_by_depth(model)
    operations = [node.operation for nodes in by_depth.values() for node in nodes]
    assert block in operations and model.layers[-1] in operations
    for nodes in by_depth.values():
        for node in nodes:
            assert all(hasattr(t, "shape") for t in node.input_tensors)

    nested = folding_compat.nested_layers(model)
    assert block.layers[0] in nested and block.layers[1] in nested
    assert folding_compat.nested_layers(object()) == []

    structure = folding_compat.input_structure(model)
    assert set(structure) == {"left", "right"}
    packed = keras.tree.pack_sequence_as(structure, [np.ones((1, 3)), np.ones((1, 4))])
    assert model(packed).shape == (1, 4)
    assert folding_compat.input_structure(sequential) is not None


def test_a_nested_model_takes_symbolic_inputs_of_another_shape_only_while_allowed():
    import keras

    pooled = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.MaxPooling2D(2)])
    other = keras.Input((6, 6, 2))
    with pytest.raises(ValueError, match="incompatible"):
        pooled(other)
    with folding_compat.nested_models_take_any_shape():
        assert pooled(other).shape == (None, 3, 3, 2)
    with pytest.raises(ValueError, match="incompatible"):  # the check is back afterwards
        pooled(other)


def test_keras_applications_and_ops_classes_are_recognised():
    import keras

    convnext = keras.applications.ConvNeXtTiny(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    scales = [layer for layer in convnext.layers if type(layer).__name__ == "LayerScale"]
    assert scales and folding_compat.is_applications_class(type(scales[0]))
    assert not folding_compat.is_applications_class(keras.layers.Dense)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.ops.add(inputs, 1.0))
    recorded = [
        node.operation for nodes in folding_compat.nodes_by_depth(model).values() for node in nodes
    ]
    ops = [op for op in recorded if not isinstance(op, keras.layers.InputLayer)]
    assert ops and all(folding_compat.is_ops_class(type(op)) for op in ops)
    assert not folding_compat.is_ops_class(keras.layers.Dense)

    activated = keras.Model(inputs, keras.activations.relu(inputs, max_value=6.0))
    (relu,) = [node.operation for node in folding_compat.nodes_by_depth(activated)[0]]
    assert folding_compat.is_ops_class(type(relu)), type(relu)


def test_a_weight_left_of_an_operator_records_an_operation_on_a_symbolic_tensor():
    import keras

    scale = keras.Variable(2.0)
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="KerasTensor"):
        scale * inputs
    with folding_compat.symbolic_variable_operators():
        outputs = (scale * inputs + scale) / scale - scale
    assert isinstance(outputs, keras.KerasTensor)
    model = keras.Model(inputs, outputs)
    result = model(np.ones((1, 3), np.float32))
    np.testing.assert_allclose(np.asarray(result), np.full((1, 3), (2.0 + 2.0) / 2.0 - 2.0))
    assert scale * 3.0 == 6.0  # outside, the operators are Keras' own again


def test_keras2_modules_are_translated_to_the_ones_keras3_writes():
    import keras

    for class_name, module in folding_compat.KERAS3_MODEL_MODULES.items():
        assert hasattr(importlib.import_module(module), class_name), (module, class_name)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    written = keras.saving.serialize_keras_object(model)
    written["module"] = folding_compat.keras3_module("tf_keras.src.engine.sequential", "Sequential")
    layer = written["config"]["layers"][-1]
    layer["module"] = folding_compat.keras3_module("tf_keras.src.layers.core.dense", "Dense")
    assert importlib.import_module(layer["module"]).Dense is keras.layers.Dense
    loaded = keras.saving.deserialize_keras_object(written)
    assert isinstance(loaded, keras.Sequential) and isinstance(
        loaded.layers[-1], keras.layers.Dense
    )
    assert (
        folding_compat.keras3_module("tf_keras.src.engine.functional", "Functional")
        == "keras.src.models.functional"
    )


# -- TensorFlow and tf2onnx ------------------------------------------------------------------


def _concrete(function, *shapes):
    import tensorflow as tf

    signature = [tf.TensorSpec(shape, tf.float32, name=f"x{i}") for i, shape in enumerate(shapes)]
    return tf.function(function, input_signature=signature, autograph=False).get_concrete_function()


def test_a_keras_model_goes_through_freezing_conversion_and_the_optimisers():
    import keras
    import tensorflow as tf

    folding_compat.patch_tf2onnx_for_keras()
    model = _dense_bn()
    model.build((None, 3))
    concrete = _concrete(lambda x: model(x, training=False), (None, 3))
    graph_def = folding_compat.freeze_variables(concrete)
    ops = {node.op for node in graph_def.node}
    assert "MatMul" in ops and not ops & {"VarHandleOp", "ReadVariableOp"}

    assert not folding_compat.tf_op_def("MatMul").is_stateful
    assert folding_compat.tf_op_def("VarHandleOp").is_stateful
    assert folding_compat.tf_op_def("NoSuchOpAnywhere") is None

    input_names = [t.name for t in concrete.inputs[:1]]  # the rest: captured variables
    output_names = [t.name for t in concrete.outputs]
    renames = folding_compat.tensor_renames(concrete, input_names, output_names)
    assert isinstance(renames, dict) and renames

    optimizers = folding_compat.tf2onnx_optimizers()
    from folding.export.tf2onnx_convert import FUSING_OPTIMIZERS, OPTIMIZER_OPS

    assert set(FUSING_OPTIMIZERS) | set(OPTIMIZER_OPS) <= set(optimizers)
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")
        graph = folding_compat.tf_graph_to_onnx(
            tf_graph,
            opset=17,
            input_names=input_names,
            output_names=output_names,
            renames=renames,
        )
        kept = {k: v for k, v in optimizers.items() if k not in FUSING_OPTIMIZERS}
        optimized = folding_compat.optimize_to_fixed_point(graph, kept)
        proto = optimized.make_model("compat")
    onnx.checker.check_model(proto)
    rows = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(rows, training=False))
    assert np.allclose(_run(proto, rows), expected, atol=1e-5)


def test_the_erfc_converter_is_registered_and_computes_erfc():
    import tensorflow as tf

    from folding.export.tf2onnx_convert import convert_function

    assert "Erfc" in folding_compat.tf2onnx_converted_ops()
    assert {"MatMul", "Conv2D", "FusedBatchNormV3"} <= folding_compat.tf2onnx_converted_ops()
    first, second = folding_compat.unique_node_name("n"), folding_compat.unique_node_name("n")
    assert first != second and first.startswith("n")
    assert folding_compat.numpy_dtype_of(TensorProto.FLOAT) == np.float32

    concrete = _concrete(tf.math.erfc, (None, 4))
    names = ([t.name for t in concrete.inputs], [t.name for t in concrete.outputs])
    renames = folding_compat.tensor_renames(concrete, *names)
    proto = convert_function(concrete, *names, renames, 17)
    assert "Erf" in {node.op_type for node in proto.graph.node}
    rows = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    assert np.allclose(_run(proto, rows), tf.math.erfc(rows).numpy(), atol=1e-6)


def test_grappler_inlines_a_function_call():
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

    @tf.function(jit_compile=False)
    def inner(x):
        return x * 2.0

    concrete = _concrete(lambda x: inner(x) + 1.0, (None, 2))
    graph_def = concrete.graph.as_graph_def()
    assert graph_def.library.function
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.optimizers[:] = ["function"]
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name="")
        meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def)
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend([t.name for t in concrete.outputs])
    meta_graph.collection_def["train_op"].CopyFrom(fetch)
    inlined = folding_compat.grappler_optimize(config, meta_graph)
    ops = {node.op for node in inlined.node}
    assert "Mul" in ops and not ops & {"PartitionedCall", "StatefulPartitionedCall"}


# -- the stdlib hooks ------------------------------------------------------------------------


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_tar_extension_headers_are_checked_before_they_are_read(tar_format):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        info = tarfile.TarInfo("d/" + "n" * 300)
        tar.addfile(info, io.BytesIO(b""))
    seen: list[int] = []

    class Refused(Exception):
        pass

    def check(size: int) -> None:
        seen.append(size)
        if size > 100:
            raise Refused

    buffer.seek(0)
    checked = folding_compat.tar_info_checking_extensions(check)
    with pytest.raises(Refused), tarfile.open(fileobj=buffer, tarinfo=checked):
        pass
    assert seen and seen[0] > 300
    buffer.seek(0)
    allowed = folding_compat.tar_info_checking_extensions(lambda size: None)
    with tarfile.open(fileobj=buffer, tarinfo=allowed) as tar:
        assert tar.getnames() == ["d/" + "n" * 300]


def test_the_subparsers_type_is_what_add_subparsers_returns():
    subparsers = argparse.ArgumentParser().add_subparsers()
    assert isinstance(subparsers, folding_compat.Subparsers)
    assert service_compat.Subparsers is folding_compat.Subparsers


# -- ONNX Runtime ----------------------------------------------------------------------------


def _run(proto: onnx.ModelProto, rows: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: rows})[0]


def test_onnx_runtime_raises_its_invalid_argument_for_inputs_the_graph_rejects():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    invalid = service_compat.ort_invalid_argument()
    assert issubclass(invalid, Exception)
    with pytest.raises(invalid, match="rank"):
        _run(proto, np.zeros(3, np.float32))


# -- uvicorn ---------------------------------------------------------------------------------


class _Server:
    """uvicorn on 127.0.0.1 with the guarded protocol, in a thread, on a socket of our own."""

    def __init__(self, limits) -> None:
        import uvicorn

        from service.http_api.connections import GuardedHttpProtocol

        self.disconnected = threading.Event()
        config = uvicorn.Config(
            self.app,
            http=functools.partial(GuardedHttpProtocol, limits=limits),
            interface="asgi3",
            lifespan="off",
            log_level="error",
        )
        self.server = uvicorn.Server(config)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.socket])), daemon=True
        )

    async def app(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            if not message.get("more_body"):
                break
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    def __enter__(self) -> _Server:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            threading.Event().wait(0.01)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def exchange(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall(data)
            answer = b""
            while not (answer.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in answer):
                chunk = connection.recv(65536)
                if not chunk:  # every other answer here ends with the connection
                    break
                answer += chunk
            return answer


def test_the_guarded_protocol_runs_on_uvicorns_internals():
    from service.http_api.connections import ConnectionLimits

    limits = ConnectionLimits(max_headers=6, body_timeout=0.3, body_min_rate=10**9)
    with _Server(limits) as server:
        plain = server.exchange(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert plain.startswith(b"HTTP/1.1 200") and plain.endswith(b"ok")

        assert server.exchange(b"\x00\x01 not http\r\n\r\n").startswith(b"HTTP/1.1 400")

        many = b"GET / HTTP/1.1\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(8)) + b"\r\n"
        refused = server.exchange(many)
        assert refused.startswith(b"HTTP/1.1 431") and b"\r\ndate: " in refused.lower()
        assert refused.endswith(b'"request has more than 6 header fields"}')

        trickle = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab"
        late = server.exchange(trickle)
        assert late.startswith(b"HTTP/1.1 408"), late
        assert server.disconnected.wait(10)

        upgrade = (
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert server.exchange(upgrade).startswith(b"HTTP/1.1 101")
