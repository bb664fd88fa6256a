"""REST and gRPC, V2 and TF Serving give the same state for the same version: one served
(AVAILABLE), one waiting to be folded (LOADING), one whose ONNX file cannot be loaded and
one whose upload failed verification (both END / UNAVAILABLE)."""

from __future__ import annotations

import shutil
import time

import grpc
import httpx
import pytest
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.service.conftest import DEMO_SOURCE, free_port, serving

VERSIONS = {
    ("digits", 1): "AVAILABLE",
    ("digits", 2): "LOADING",  # a Keras source put in after start-up: not folded yet
    ("digits", 3): "END",  # a model.onnx ONNX Runtime cannot read
    ("strict", 1): "END",  # an upload that failed verification
}
INDEX_STATES = {"AVAILABLE": "READY", "LOADING": "LOADING", "END": "UNAVAILABLE"}
STATUS = get_model_status_pb2.ModelVersionStatus


@pytest.fixture(scope="module")
def parity_server(tmp_path_factory, server):
    """gRPC on, a tolerance no fold can meet; the demo model copied in already folded."""
    models = tmp_path_factory.mktemp("parity") / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    port = free_port()
    env = {
        "FOLDSERVE_GRPC_PORT": str(port),
        "FOLDSERVE_FOLD_RTOL": "1e-15",
        "FOLDSERVE_FOLD_NOISE_FACTOR": "0",
        "FOLDSERVE_POLL_INTERVAL": "0.1",
    }
    with serving(models, env) as running:
        (models / "digits" / "2").mkdir()
        shutil.copy(DEMO_SOURCE, models / "digits" / "2" / "model.keras")
        (models / "digits" / "3").mkdir()
        (models / "digits" / "3" / "model.onnx").write_bytes(b"not an ONNX model")
        upload = {"file": ("strict.keras", DEMO_SOURCE.read_bytes())}
        url = f"{running.url}/v1/models?wait=true"
        refused = httpx.post(url, files=upload, data={"name": "strict"}, timeout=300)
        assert refused.status_code == 422, refused.text
        _wait_for_index(running, ("digits", "3"), "UNAVAILABLE")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            running.channel = channel
            yield running


def _wait_for_index(server, key: tuple[str, str], state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = httpx.post(f"{server.url}/v2/repository/index").json()
        if any((row["name"], row["version"], row["state"]) == (*key, state) for row in index):
            return
        time.sleep(0.05)
    raise AssertionError(f"{key} never became {state} in the repository index: {index}")


def _grpc_status(channel, name: str, version: int | None) -> list[tuple[str, str, str, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    codes = STATUS.DESCRIPTOR.fields_by_name["status"].message_type
    code_names = codes.fields_by_name["error_code"].enum_type.values_by_number
    return [
        (
            str(entry.version),
            STATUS.State.Name(entry.state),
            code_names[entry.status.error_code].name,
            entry.status.error_message,
        )
        for entry in reply.model_version_status
    ]


def _rest_status(server, name: str, version: int | None) -> list[tuple[str, str, str, str]]:
    path = f"/v1/models/{name}" + ("" if version is None else f"/versions/{version}")
    reply = httpx.get(server.url + path)
    assert reply.status_code == 200, reply.text
    return [
        (
            entry["version"],
            entry["state"],
            entry["status"]["error_code"],
            entry["status"]["error_message"],
        )
        for entry in reply.json()["model_version_status"]
    ]


def test_tfserving_status_agrees_over_rest_and_grpc(parity_server):
    for (name, version), state in VERSIONS.items():
        over_rest = _rest_status(parity_server, name, version)
        assert over_rest == _grpc_status(parity_server.channel, name, version)
        [(_, rest_state, code, message)] = over_rest
        assert rest_state == state, over_rest
        assert (code == "OK") == (state != "END"), over_rest
        assert bool(message) == (state == "END"), over_rest
    every = _rest_status(parity_server, "digits", None)
    assert every == _grpc_status(parity_server.channel, "digits", None)
    assert [(entry[0], entry[1]) for entry in every] == [
        ("1", "AVAILABLE"),
        ("2", "LOADING"),
        ("3", "END"),
    ]
    [(_, _, code, message)] = _rest_status(parity_server, "strict", 1)
    # a 422 (an upload that cannot be folded) is INVALID_ARGUMENT, as in service.errors
    assert code == "INVALID_ARGUMENT" and message, (code, message)


def test_repository_index_agrees_over_rest_and_grpc(parity_server):
    over_rest = [
        (row["name"], row["version"], row["state"], row.get("reason", ""))
        for row in httpx.post(f"{parity_server.url}/v2/repository/index").json()
    ]
    stub = pb_grpc.GRPCInferenceServiceStub(parity_server.channel)
    over_grpc = [
        (model.name, model.version, model.state, model.reason)
        for model in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=30).models
    ]
    assert over_rest == over_grpc
    states = {(name, int(version)): state for name, version, state, _ in over_rest}
    assert states == {key: INDEX_STATES[state] for key, state in VERSIONS.items()}
    ready = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=30).models
    assert [(model.name, model.version) for model in ready] == [("digits", "1")]
    # the TF Serving status gives the same reasons the index does
    for name, version, state, reason in over_rest:
        [(_, _, _, message)] = _rest_status(parity_server, name, int(version))
        assert message == (reason if state == "UNAVAILABLE" else ""), (name, version)


def test_readiness_and_metadata_agree_over_rest_and_grpc(parity_server):
    stub = pb_grpc.GRPCInferenceServiceStub(parity_server.channel)
    for (name, version), state in VERSIONS.items():
        path = f"{parity_server.url}/v2/models/{name}/versions/{version}"
        ready = stub.ModelReady(pb.ModelReadyRequest(name=name, version=str(version)))
        assert ready.ready == (httpx.get(f"{path}/ready").status_code == 200)
        assert ready.ready == (state == "AVAILABLE")
        over_rest = httpx.get(path)
        request = pb.ModelMetadataRequest(name=name, version=str(version))
        if state != "AVAILABLE":
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelMetadata(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert over_rest.status_code == 404
            assert caught.value.details() == over_rest.json()["error"]
            continue
        metadata = stub.ModelMetadata(request, timeout=30)
        body = over_rest.json()
        assert (metadata.name, list(metadata.versions), metadata.platform) == (
            body["name"],
            body["versions"],
            body["platform"],
        )
        assert [
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
            for tensor in metadata.inputs
        ] == [{**tensor, "shape": [int(d) for d in tensor["shape"]]} for tensor in body["inputs"]]


def test_tfserving_metadata_agrees_over_rest_and_grpc(parity_server):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "digits"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(parity_server.channel)
    reply = stub.GetModelMetadata(request, timeout=30)
    assert (reply.model_spec.name, reply.model_spec.version.value) == ("digits", 1)
    body = httpx.get(f"{parity_server.url}/v1/models/digits/metadata").json()
    assert body["model_spec"]["version"] == "1"
    for version in (2, 3):  # LOADING and END: not served, the same 404 both ways
        request.model_spec.version.value = version
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetModelMetadata(request, timeout=30)
        rest = httpx.get(f"{parity_server.url}/v1/models/digits/versions/{version}/metadata")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND and rest.status_code == 404
        assert caught.value.details() == rest.json()["error"]
