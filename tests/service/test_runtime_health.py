"""The serving process stays healthy whatever a model does: hostile ONNX models, built
here as an attacker would, against a real server.

A ``Loop`` whose trip count is an input value runs off the event loop (health checks
and gRPC stay fast) and is stopped at the time budget with a 504 naming the model; a
tiny upload that would hold half a gigabyte is refused with the figure before the
serving process builds it; a run that cannot allocate is a 4xx; shapes whose element
count overflows 64 bits are a 400 / INVALID_ARGUMENT.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.service.conftest import serving_grpc
from tests.service.test_bad_input import assert_error

BUDGET_S = 1
LIMIT_MB = 256
HUGE = 10**9  # Loop iterations: minutes of work, were it not stopped


def _model(nodes, inputs, outputs, initializers=()) -> bytes:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def _scalar_inputs() -> list:
    return [
        helper.make_tensor_value_info("n", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
    ]


def loop_by_input() -> bytes:
    """y = x + n: a Loop adding 1 ``n`` times, ``n`` being an input value."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["total_in", "one"], ["total_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("total_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("total_out", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    return _model(
        [
            helper.make_node("Reshape", ["n", "scalar"], ["trips"]),
            helper.make_node("Loop", ["trips", "true", "zero"], ["total"], body=body),
            helper.make_node("Add", ["total", "x"], ["y"]),
        ],
        _scalar_inputs(),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor("scalar", TensorProto.INT64, [0], []),
            helper.make_tensor("true", TensorProto.BOOL, [], [True]),
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ],
    )


def ones(shape: str, output: str):
    """``output`` = float ones of the shape held by ``shape``."""
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    return helper.make_node("ConstantOfShape", [shape], [output], value=value)


def sized_by_input() -> bytes:
    """y = x + sum(ConstantOfShape(n)): ``n`` floats allocated per run."""
    return _model(
        [
            ones("n", "big"),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
            helper.make_node("Add", ["total", "x"], ["y"]),
        ],
        _scalar_inputs(),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )


def constant_of_half_a_gigabyte() -> bytes:
    """A few hundred bytes that ONNX Runtime turns into a 500 MB constant kept for the
    session's life: y = max(ConstantOfShape([125e6]) + x)."""
    return _model(
        [
            ones("shape", "big"),
            helper.make_node("Add", ["big", "x"], ["shifted"]),
            helper.make_node("ReduceMax", ["shifted"], ["y"], keepdims=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [125_000_000])],
    )


def _store(models: Path, name: str, data: bytes) -> None:
    (models / name / "1").mkdir(parents=True)
    (models / name / "1" / "model.onnx").write_bytes(data)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    models = tmp_path_factory.mktemp("hostile") / "models"
    _store(models, "loop", loop_by_input())
    (models / "loop" / "1" / "unfolded.onnx").write_bytes(loop_by_input())
    _store(models, "sized", sized_by_input())
    _store(models, "stored-big", constant_of_half_a_gigabyte())
    env = {
        "FOLDSERVE_RUN_TIMEOUT_S": str(BUDGET_S),
        "FOLDSERVE_MODEL_MEMORY_LIMIT_MB": str(LIMIT_MB),
        "FOLDSERVE_PREWARM_FOLDER": "false",
    }
    with serving_grpc(models, env) as running:
        yield running


def predict(server, model: str, n: int, timeout: float = 60) -> httpx.Response:
    body = {"inputs": {"n": [n], "x": [0.5]}}
    return httpx.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=timeout)


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def test_a_long_run_does_not_stall_health_checks_and_is_stopped_at_the_budget(hostile_server):
    answer: dict[str, object] = {}

    def long_predict():
        started = time.perf_counter()
        answer["reply"] = predict(hostile_server, "loop", HUGE)
        answer["seconds"] = time.perf_counter() - started

    client = triton.InferenceServerClient(url=hostile_server.grpc_url)
    worker = threading.Thread(target=long_predict)
    worker.start()
    health_latencies = []
    with httpx.Client(timeout=10) as http:
        while worker.is_alive():
            started = time.perf_counter()
            assert http.get(f"{hostile_server.url}/v2/health/ready").status_code == 200
            assert client.is_server_ready()
            health_latencies.append(time.perf_counter() - started)
    worker.join()
    client.close()
    reply = answer["reply"]
    assert_error(reply, 504, "model 'loop' version 1", f"took longer than {BUDGET_S} s")
    assert answer["seconds"] >= BUDGET_S * 0.9  # the health checks overlapped the run
    assert len(health_latencies) >= 5
    assert max(health_latencies) < 0.5, health_latencies
    # the worker thread is free again: a short run of the same model answers at once
    short = predict(hostile_server, "loop", 10)
    assert short.status_code == 200, short.text
    assert short.json()["outputs"] == [10.5]


def test_the_budget_over_grpc_is_deadline_exceeded(hostile_server):
    client = triton.InferenceServerClient(url=hostile_server.grpc_url)
    trips = triton.InferInput("n", [1], "INT64")
    trips.set_data_from_numpy(np.array([HUGE], np.int64))
    x = triton.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.array([0.5], np.float32))
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer("loop", [trips, x])
    client.close()
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "model 'loop' version 1" in caught.value.message()


def test_compare_runs_within_the_budget(hostile_server):
    reply = httpx.post(
        f"{hostile_server.url}/v1/models/loop:compare",
        json={"inputs": {"n": [HUGE], "x": [0.5]}, "repeats": 1},
        timeout=60,
    )
    assert_error(reply, 504, "model 'loop' version 1", ":compare took longer than")
    fine = httpx.post(
        f"{hostile_server.url}/v1/models/loop:compare",
        json={"inputs": {"n": [3], "x": [0.5]}, "repeats": 1},
        timeout=60,
    )
    assert fine.status_code == 200 and fine.json()["verdict"]["passed"], fine.text


def test_a_run_that_cannot_allocate_is_a_4xx_naming_the_model(hostile_server):
    reply = predict(hostile_server, "sized", 10**11)
    assert_error(reply, 422, "model 'sized' version 1", "ConstantOfShape", "allocate")
    assert "onnxruntime_src" not in reply.text
    negative = predict(hostile_server, "sized", -5)
    assert_error(negative, 422, "model 'sized' version 1", "ConstantOfShape")
    fine = predict(hostile_server, "sized", 1000)
    assert fine.status_code == 200 and fine.json()["outputs"] == [1000.5]


def test_an_upload_over_the_memory_limit_is_refused_with_the_figure(hostile_server, tmp_path):
    before = resident_mb(hostile_server.process.pid)
    path = tmp_path / "amplifier.onnx"
    path.write_bytes(constant_of_half_a_gigabyte())
    with open(path, "rb") as handle:
        reply = httpx.post(
            f"{hostile_server.url}/v1/models?wait=true",
            files={"file": (path.name, handle, "application/octet-stream")},
            data={"name": "amplifier"},
            timeout=300,
        )
    assert_error(reply, 422, "476.8 MiB", f"the limit is {LIMIT_MB} MiB")
    grown = resident_mb(hostile_server.process.pid) - before
    assert grown < 100, f"the serving process grew by {grown:.0f} MiB"
    assert not (hostile_server.models_dir / "amplifier" / "1").exists()  # never committed


def test_a_stored_model_over_the_limit_is_unavailable_with_the_reason(hostile_server):
    listed = httpx.get(f"{hostile_server.url}/v1/models", timeout=10).json()["models"]
    (entry,) = [model for model in listed if model["name"] == "stored-big"]
    (version,) = entry["versions"]
    assert version["state"] == "UNAVAILABLE"
    assert "476.8 MiB" in version["reason"] and f"{LIMIT_MB} MiB" in version["reason"]
    assert resident_mb(hostile_server.process.pid) < 450  # never built in the server


HUGE_SHAPE = [2**32, 2**32]


def test_grpc_shapes_whose_count_overflows_are_invalid_argument(hostile_server):
    with grpc.insecure_channel(hostile_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        typed = pb.ModelInferRequest(model_name="loop")
        typed.inputs.add(name="x", datatype="FP32", shape=HUGE_SHAPE).contents.fp32_contents[:] = [
            1.0
        ]
        typed_empty = pb.ModelInferRequest(model_name="loop")  # np.prod overflows to 0
        typed_empty.inputs.add(name="x", datatype="FP32", shape=HUGE_SHAPE)
        raw = pb.ModelInferRequest(model_name="loop")
        raw.inputs.add(name="x", datatype="FP32", shape=HUGE_SHAPE)
        raw.raw_input_contents.append(b"\0" * 4)
        empty = pb.ModelInferRequest(model_name="loop")
        empty.inputs.add(name="x", datatype="FP32", shape=[0, 2**63 - 1])
        for request in (typed, typed_empty, raw, empty):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "input 'x' has shape [" in caught.value.details()
    assert "Traceback" not in hostile_server.log.read_text()


@pytest.mark.parametrize("shape", [HUGE_SHAPE, [0, 2**63 - 1], [1, 2**64 - 1]])
def test_rest_shapes_whose_count_overflows_are_a_400(hostile_server, shape):
    url = f"{hostile_server.url}/v2/models/loop/infer"
    tensor = {"name": "x", "datatype": "FP32", "shape": shape}
    as_json = httpx.post(url, json={"inputs": [{**tensor, "data": []}]}, timeout=10)
    assert_error(as_json, 400, "input 'x' has shape [")
    header = httpx.Request("POST", url, json={"inputs": [tensor]}).content
    header = header.replace(b'"shape"', b'"parameters":{"binary_data_size":4},"shape"')
    binary = httpx.post(
        url,
        content=header + b"\0" * 4,
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=10,
    )
    assert_error(binary, 400, "input 'x' has shape [")


def test_unimplemented_triton_methods_are_quiet(hostile_server):
    with grpc.insecure_channel(hostile_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="x"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    log = hostile_server.log.read_text()
    assert "NotImplementedError" not in log and "Traceback" not in log


def test_the_hostile_files_are_what_they_claim(tmp_path):
    """The models above are valid ONNX, so each test exercises the server, not a parser."""
    for data in (loop_by_input(), sized_by_input(), constant_of_half_a_gigabyte()):
        onnx.checker.check_model(onnx.load_from_string(data))
        assert len(data) < 1024
