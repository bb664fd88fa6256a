"""Attacks on the running server from outside its authors' test suites: each test
builds the hostile input itself and proves the bad outcome does not happen."""

from __future__ import annotations

import shutil

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

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
    models = tmp_path_factory.mktemp("wave2") / "models"
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
