"""Predictions over TF Serving REST and V2 (JSON, binary, the official Triton client)."""

import httpx
import numpy as np
import pytest
import tritonclient.http as triton


def accuracy(probabilities, labels) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


PROVIDERS = {"CPUExecutionProvider", "CUDAExecutionProvider"}


def test_health_and_server_metadata(server):
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == "foldserve"
    assert "binary_tensor_data" in meta["extensions"]
    assert meta["execution_provider"] in PROVIDERS  # device=auto: either, never assumed


def test_demo_model_was_folded_at_start_up(server):
    version_dir = server.models_dir / "digits" / "1"
    assert {"model.onnx", "unfolded.onnx", "report.json"} <= {p.name for p in version_dir.iterdir()}
    status = httpx.get(f"{server.url}/v1/models/digits").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_tf_serving_metadata(server):
    meta = httpx.get(f"{server.url}/v1/models/digits/versions/1/metadata").json()
    assert meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    pixels = signature["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", "64"]
    assert list(signature["outputs"]) == ["probabilities"]


def test_row_and_columnar_predict_classify_digits(server, digits):
    rows = digits.data[:200].tolist()
    by_rows = httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": rows})
    assert by_rows.status_code == 200
    predictions = np.array(by_rows.json()["predictions"])
    assert predictions.shape == (200, 10)
    assert accuracy(predictions, digits.target[:200]) > 0.95
    np.testing.assert_allclose(predictions.sum(axis=1), 1, atol=1e-5)

    by_columns = httpx.post(
        f"{server.url}/v1/models/digits/versions/1:predict",
        json={"inputs": {"pixels": rows}, "signature_name": "serving_default"},
    )
    assert by_columns.status_code == 200
    np.testing.assert_allclose(np.array(by_columns.json()["outputs"]), predictions, rtol=1e-6)


def test_named_instances(server, digits):
    body = {"instances": [{"pixels": row} for row in digits.data[:3].tolist()]}
    reply = httpx.post(f"{server.url}/v1/models/digits:predict", json=body)
    assert reply.status_code == 200
    assert np.array(reply.json()["predictions"]).shape == (3, 10)


def test_v2_model_metadata_and_ready(server):
    meta = httpx.get(f"{server.url}/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    server_provider = httpx.get(f"{server.url}/v2").json()["execution_provider"]
    assert meta["parameters"]["execution_provider"] == server_provider
    assert httpx.get(f"{server.url}/v2/models/digits/versions/1/ready").status_code == 200


def test_v2_json_infer_matches_tf_serving(server, digits):
    rows = digits.data[:5].astype(np.float32)
    body = {
        "id": "req-7",
        "inputs": [
            {
                "name": "pixels",
                "shape": [5, 64],
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ],
    }
    reply = httpx.post(f"{server.url}/v2/models/digits/infer", json=body).json()
    assert reply["id"] == "req-7"
    assert reply["model_name"] == "digits" and reply["model_version"] == "1"
    [output] = reply["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [5, 10]
    assert output["datatype"] == "FP32"
    tf_reply = httpx.post(
        f"{server.url}/v1/models/digits:predict", json={"instances": rows.tolist()}
    ).json()
    np.testing.assert_allclose(
        np.array(output["data"]).reshape(5, 10), tf_reply["predictions"], rtol=1e-6
    )


@pytest.mark.parametrize("binary", [False, True])
def test_triton_client(server, digits, binary):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    metadata = client.get_model_metadata("digits")
    assert metadata["inputs"][0]["name"] == "pixels"
    rows = digits.data[:64].astype(np.float32)
    tensor = triton.InferInput("pixels", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("digits", [tensor], outputs=wanted, model_version="1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (64, 10) and probabilities.dtype == np.float32
    assert accuracy(probabilities, digits.target[:64]) > 0.95
    default_outputs = client.infer("digits", [tensor]).as_numpy("probabilities")
    np.testing.assert_array_equal(default_outputs, probabilities)
    compressed = client.infer(
        "digits",
        [tensor],
        request_compression_algorithm="gzip",
        response_compression_algorithm="deflate",
    )
    np.testing.assert_array_equal(compressed.as_numpy("probabilities"), probabilities)
    with pytest.raises(triton.InferenceServerException, match="no model named 'nope'"):
        client.infer("nope", [tensor])
    client.close()


def test_v2_binary_request_by_hand(server, digits):
    rows = digits.data[:2].astype(np.float32)
    header = (
        b'{"inputs":[{"name":"pixels","shape":[2,64],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":512}}],'
        b'"outputs":[{"name":"probabilities","parameters":{"binary_data":true}}]}'
    )
    reply = httpx.post(
        f"{server.url}/v2/models/digits/infer",
        content=header + rows.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 200
    json_length = int(reply.headers["Inference-Header-Content-Length"])
    meta = httpx.Response(200, content=reply.content[:json_length]).json()
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 10 * 4
    values = np.frombuffer(reply.content[json_length:], np.float32).reshape(2, 10)
    assert np.argmax(values, axis=1).tolist() == digits.target[:2].tolist()


def test_repository_index_and_metrics(server):
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    assert {"name": "digits", "version": "1", "state": "READY"} in index
    httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": [[0.0] * 64]})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'foldserve_requests_total{endpoint="/v1/models/{name}:predict"' in text
    assert "foldserve_request_duration_seconds_bucket" in text
    assert "foldserve_loaded_models" in text
    assert "foldserve_fold_jobs_total" in text or "foldserve_fold_duration_seconds" in text


def test_openapi_docs(server):
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/v2/models/{name}/infer" in paths and "/v1/models" in paths
