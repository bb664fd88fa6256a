"""Attacks on the running server from outside its authors' test suites: each test
builds the hostile input itself and proves the bad outcome does not happen."""

from __future__ import annotations

import io
import shutil
import struct
import threading
import time
import zipfile

import grpc
import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.helpers import post_model
from tests.service.conftest import free_port, serving


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory, server):
    """The demo model (already folded by ``server``) with gRPC on."""
    models = tmp_path_factory.mktemp("hostile-inputs") / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    port = free_port()
    with serving(models, {"FOLDSERVE_GRPC_PORT": str(port)}) as running:
        running.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield running
        running.channel.close()


def filled_request(shape: list[int]) -> predict_pb2.PredictRequest:
    """A TF Serving PredictRequest of a few bytes: one float_val fills ``shape``."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    tensor = request.inputs["pixels"]
    tensor.dtype = types_pb2.DT_FLOAT
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.append(0.5)
    return request


@pytest.mark.parametrize(
    "shape, code, fragment",
    [
        # numpy: "array is too big" (ValueError) - was INTERNAL
        ([2**62, 2], grpc.StatusCode.INVALID_ARGUMENT, "each dimension must be between"),
        # 512 GiB: MemoryError - was INTERNAL
        ([2**31 - 1, 64], grpc.StatusCode.RESOURCE_EXHAUSTED, "filled from one value"),
    ],
)
def test_tfserving_grpc_fill_of_an_impossible_shape_is_refused(grpc_server, shape, code, fragment):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_server.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(filled_request(shape), timeout=60)
    assert caught.value.code() == code, caught.value.details()
    assert fragment in caught.value.details()


def test_a_42_byte_tfserving_request_does_not_become_a_gigabyte(grpc_server):
    """One float_val with shape [4_000_000, 64] asked the server to build (and run the
    model on) a 1 GiB array: +2 GB resident for a 42-byte message."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_server.channel)
    request = filled_request([4_000_000, 64])
    assert request.ByteSize() < 64
    before = resident_mb(grpc_server.process.pid)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "FOLDSERVE_MAX_REQUEST_BYTES" in caught.value.details()
    assert resident_mb(grpc_server.process.pid) - before < 200


def squaring_chain(links: int) -> bytes:
    """y = x + 3^(2^links): a chain of int64 ``Mul`` nodes squaring a constant. ONNX
    Runtime wraps at int64; the serving process's memory estimate followed the values as
    Python integers, whose size doubled with every link (links=24: 6 s per estimate with
    the interpreter held, so health checks waited 8 s; each further link doubles it)."""
    nodes = [
        helper.make_node(
            "Constant", [], ["c0"], value=helper.make_tensor("v", TensorProto.INT64, [1], [3])
        )
    ]
    for index in range(links):
        nodes.append(helper.make_node("Mul", [f"c{index}", f"c{index}"], [f"c{index + 1}"]))
    nodes.append(helper.make_node("Cast", [f"c{links}"], ["offset"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Add", ["x", "offset"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "squaring",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class HealthProbe:
    """Reads /v2/health/ready over and over in a thread; ``worst`` is the longest wait."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.answered = url, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            httpx.get(f"{self.url}/v2/health/ready", timeout=600)
            self.worst = max(self.worst, time.monotonic() - started)
            self.answered += 1
            self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_an_onnx_squaring_its_constants_does_not_hold_the_server(server):
    """40 links: 3^(2^40) as a Python integer would never finish (nor fit in memory)."""
    model = squaring_chain(40)
    assert len(model) < 4096
    with HealthProbe(server.url) as probe:
        answer = post_model(server.url, model, "squaring.onnx", "squaring")
    assert answer.status_code == 201, answer.text
    assert probe.answered > 0
    assert probe.worst < 2.0, f"health checks waited {probe.worst:.1f} s"
    prediction = httpx.post(
        f"{server.url}/v2/models/squaring/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]},
        timeout=60,
    )
    assert prediction.status_code == 200, prediction.text


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header declaring ``shape`` (the data is whatever follows)."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def corrupted_crc() -> bytes:
    data = bytearray(npz({"pixels.npy": npy(np.zeros((4, 64), np.float32))}))
    data[data.find(b"\x93NUMPY") + 200] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize(
    "file_name, content, fragment",
    [
        # 144 bytes declaring 3.5 EiB: was 422 "MemoryError: Unable to allocate 3.47 EiB"
        ("bomb.npy", npy_header((10**9, 10**9)) + b"\0" * 16, "is not a readable"),
        # 1 MB of zeros inflating to 1 GB: was the fold worker's 8 GB memory cap
        (
            "bomb.npz",
            npz({"pixels.npy": npy(np.zeros((4_000_000, 64), np.float32))}, zipfile.ZIP_DEFLATED),
            "would inflate to",
        ),
        # a member declaring a shape its bytes do not hold: numpy allocates it first
        ("liar.npz", npz({"pixels.npy": npy_header((10**9, 64)) + b"\0" * 64}), "declares shape"),
        # these were 422s naming no file: "BadZipFile: ...", "ValueError: ..."
        ("crc.npz", corrupted_crc(), "Bad CRC-32"),
        ("pickle.npz", npz({"pixels.npy": npy(np.array([1, "x"], dtype=object))}), "allow_pickle"),
        ("cut.npz", npz({"pixels.npy": npy(np.zeros((4, 64), np.float32))[:100]}), "EOF"),
    ],
)
def test_hostile_probe_files_are_a_400_naming_the_probe(
    server, trained_model_file, file_name, content, fragment
):
    with open(trained_model_file, "rb") as model:
        answer = httpx.post(
            f"{server.url}/v1/models?wait=true",
            files={"file": ("model.keras", model), "probe": (file_name, content)},
            data={"name": "probed"},
            timeout=300,
        )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith("probe file '"), error
    assert fragment in error
    assert "MemoryError" not in error and "memory limit" not in error
