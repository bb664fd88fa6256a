"""The Open Inference Protocol over gRPC, spoken by the official tritonclient.grpc."""

from __future__ import annotations

import shutil
import socket

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.service.conftest import Server, folded_copy, serving_grpc

TOKEN = "reader-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory, server):
    """The demo model (already folded by ``server``) behind an API token, with gRPC on."""
    models = folded_copy(tmp_path_factory, server, "grpc")
    with serving_grpc(models, {"FOLDSERVE_API_TOKEN": TOKEN}) as running:
        yield running


@pytest.fixture
def client(grpc_server):
    client = triton.InferenceServerClient(url=grpc_server.grpc_url)
    yield client
    client.close()


def status_of(call) -> str:
    with pytest.raises(triton.InferenceServerException) as caught:
        call()
    return f"{caught.value.status()}: {caught.value.message()}"


def pixels(rows: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("pixels", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_health_metadata_and_repository_index(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata().name == "foldserve"
    assert client.is_model_ready("digits", headers=AUTH)
    assert client.is_model_ready("digits", "1", headers=AUTH)
    assert not client.is_model_ready("nope", headers=AUTH)

    metadata = client.get_model_metadata("digits", headers=AUTH, as_json=True)
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert metadata["outputs"][0]["name"] == "probabilities"

    index = client.get_model_repository_index(headers=AUTH, as_json=True)
    assert index["models"] == [{"name": "digits", "version": "1", "state": "READY"}]


def test_infer_raw_matches_http_and_classifies(client, grpc_server, digits):
    rows = digits.data[:256].astype(np.float32)
    result = client.infer("digits", [pixels(rows)], headers=AUTH, model_version="1")
    assert result.get_response().model_version == "1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (256, 10)
    assert np.mean(np.argmax(probabilities, axis=1) == digits.target[:256]) > 0.9

    body = {"inputs": [{"name": "pixels", "shape": [256, 64], "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}  # fmt: skip
    over_http = httpx.post(
        f"{grpc_server.url}/v2/models/digits/infer",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    expected = np.asarray(over_http["outputs"][0]["data"], np.float32).reshape(256, 10)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)


def test_infer_4096_rows_and_requested_outputs(client, digits):
    rows = np.resize(digits.data.astype(np.float32), (4096, 64))
    wanted = [triton.InferRequestedOutput("probabilities")]
    result = client.infer("digits", [pixels(rows)], outputs=wanted, headers=AUTH)
    assert result.as_numpy("probabilities").shape == (4096, 10)
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, rtol=1e-5)

    unknown = [triton.InferRequestedOutput("logits")]
    status = status_of(lambda: client.infer("digits", [pixels(rows[:2])], outputs=unknown,
                                            headers=AUTH))  # fmt: skip
    assert status.startswith("StatusCode.INVALID_ARGUMENT")
    assert "unknown output 'logits'" in status


def test_typed_contents_in_and_out(grpc_server, client, digits):
    """Inputs in InferTensorContents (no raw bytes) come back typed, equal to raw."""
    rows = digits.data[:8].astype(np.float32)
    request = pb.ModelInferRequest(model_name="digits", id="typed-1")
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=[8, 64])
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert response.id == "typed-1"
    assert not response.raw_output_contents
    output = response.outputs[0]
    assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", [8, 10])
    typed = np.asarray(output.contents.fp32_contents, np.float32).reshape(8, 10)
    raw = client.infer("digits", [pixels(rows)], headers=AUTH).as_numpy("probabilities")
    np.testing.assert_allclose(typed, raw, rtol=1e-6, atol=1e-7)


def test_protocol_errors_are_grpc_status_codes(client, grpc_server):
    good = np.zeros((2, 64), np.float32)
    not_found = status_of(lambda: client.infer("nope", [pixels(good)], headers=AUTH))
    assert not_found == "StatusCode.NOT_FOUND: no model named 'nope'"
    no_version = status_of(lambda: client.get_model_metadata("digits", "7", headers=AUTH))
    assert no_version.startswith("StatusCode.NOT_FOUND")

    wrong_width = status_of(lambda: client.infer("digits", [pixels(good[:, :63])], headers=AUTH))
    assert wrong_width.startswith("StatusCode.INVALID_ARGUMENT")
    assert "'pixels'" in wrong_width

    as_int = triton.InferInput("pixels", [2, 64], "INT32")
    as_int.set_data_from_numpy(good.astype(np.int32))
    wrong_type = status_of(lambda: client.infer("digits", [as_int], headers=AUTH))
    assert wrong_type == (
        "StatusCode.INVALID_ARGUMENT: input 'pixels' has datatype INT32; model expects FP32"
    )

    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(b"\0" * 12)
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "12 bytes of binary data" in caught.value.details()


def test_api_token_is_authorization_metadata(client):
    good = np.zeros((1, 64), np.float32)
    anonymous = status_of(lambda: client.infer("digits", [pixels(good)]))
    assert anonymous.startswith("StatusCode.UNAUTHENTICATED")
    assert "authorization: Bearer" in anonymous
    wrong = {"authorization": "Bearer guess"}
    assert status_of(lambda: client.get_model_metadata("digits", headers=wrong)).startswith(
        "StatusCode.UNAUTHENTICATED"
    )
    assert client.is_server_live()  # health needs no token, as over HTTP


def test_taken_grpc_port_stops_start_up_with_a_clear_error(tmp_path, server):
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        starting = Server(models, {"FOLDSERVE_GRPC_PORT": str(port)})
        try:
            starting.process.wait(timeout=120)
        finally:
            starting.stop()
    assert starting.process.returncode != 0
    log = starting.log.read_text()
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in log
    assert "--grpc-port / FOLDSERVE_GRPC_PORT" in log
    assert "Traceback" not in log and len(log.strip().splitlines()) == 1


def grpc_calls(
    metrics_text: str,
    model: str,
    method: str,
    code: str,
    service: str = "inference.GRPCInferenceService",
) -> float:
    """``foldserve_requests_total`` for one gRPC method, model and status code (0 if absent)."""
    wanted = {
        "endpoint": f"/{service}/{method}",
        "method": "GRPC",
        "model": model,
        "status": code,
    }
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "foldserve_requests_total" and sample.labels == wanted:
                return sample.value
    return 0.0


def test_grpc_calls_are_counted_in_the_metrics_like_http_requests(client, grpc_server, digits):
    before = httpx.get(f"{grpc_server.url}/metrics", headers=AUTH).text  # needs the token
    rows = digits.data[:2].astype(np.float32)
    for _ in range(3):
        client.infer("digits", [pixels(rows)], headers=AUTH)
    status_of(lambda: client.infer("no-such-model", [pixels(rows)], headers=AUTH))
    status_of(lambda: client.infer("digits", [pixels(rows[:, :63])], headers=AUTH))
    status_of(lambda: client.infer("digits", [pixels(rows)]))  # no token
    after = httpx.get(f"{grpc_server.url}/metrics", headers=AUTH).text

    def added(model: str, code: str) -> float:
        return grpc_calls(after, model, "ModelInfer", code) - grpc_calls(
            before, model, "ModelInfer", code
        )

    assert added("digits", "OK") == 3
    assert added("(unknown)", "NOT_FOUND") == 1
    assert added("digits", "INVALID_ARGUMENT") == 1
    assert added("digits", "UNAUTHENTICATED") == 1
    assert (
        'foldserve_request_duration_seconds_count{endpoint="/inference.GRPCInferenceService/'
        'ModelInfer",model="digits"}' in after
    )
