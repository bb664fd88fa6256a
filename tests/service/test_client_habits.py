"""Calls that users of Triton's and KServe's official clients make out of habit."""

from __future__ import annotations

import queue

import httpx
import numpy as np
import tritonclient.grpc as triton

from tests.helpers import kserve_v1
from tests.service.test_grpc import AUTH, TOKEN, client, grpc_server, pixels  # noqa: F401


def test_triton_grpc_model_config_and_statistics(client, grpc_server, digits):  # noqa: F811
    config = client.get_model_config("digits", headers=AUTH, as_json=True)["config"]
    assert config["name"] == "digits" and config["platform"] == "onnxruntime_onnx"
    # Served with dynamic batching: Triton's dims leave out the batch axis.
    assert config["input"] == [{"name": "pixels", "data_type": "TYPE_FP32", "dims": ["64"]}]
    over_http = httpx.get(
        f"{grpc_server.url}/v2/models/digits/config", headers={"authorization": f"Bearer {TOKEN}"}
    ).json()
    assert over_http["input"][0]["dims"] == [64]

    def count() -> int:
        stats = client.get_inference_statistics("digits", headers=AUTH, as_json=True)
        [entry] = stats["model_stats"]
        return int(entry.get("inference_count", 0))

    before = count()
    client.infer("digits", [pixels(digits.data[:3].astype(np.float32))], headers=AUTH)
    assert count() - before == 3
    everything = client.get_inference_statistics(headers=AUTH, as_json=True)["model_stats"]
    assert [entry["name"] for entry in everything] == ["digits"]


def test_triton_grpc_stream_infer_answers_each_request_in_order(
    client,  # noqa: F811
    digits,
):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=AUTH)
    try:
        rows = digits.data[:4].astype(np.float32)
        client.async_stream_infer("digits", [pixels(rows[:2])], request_id="first")
        client.async_stream_infer("nope", [pixels(rows[:1])], request_id="unknown")
        client.async_stream_infer("digits", [pixels(rows[2:])], request_id="last")
        received = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    (first, no_error), (_, error), (last, _) = received
    assert no_error is None and first.get_response().id == "first"
    assert first.as_numpy("probabilities").shape == (2, 10)
    assert isinstance(error, triton.InferenceServerException) and "nope" in error.message()
    assert last.get_response().id == "last"
    np.testing.assert_array_equal(last.as_numpy("probabilities").argmax(axis=1), digits.target[2:4])


def test_kserve_v1_client_sees_a_live_server_and_a_ready_model(server):
    done = kserve_v1(
        server,
        """
live = await client.is_server_live(url)
ready = await client.is_model_ready(url, "digits")
print(live, ready)
""",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    status = httpx.get(f"{server.url}/v1/models/digits").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"  # TF Serving's body


def test_tf_serving_classify_and_regress_say_why_not(server):
    for verb in ("classify", "regress"):
        reply = httpx.post(f"{server.url}/v1/models/digits:{verb}", json={"examples": [{"x": 1.0}]})
        assert reply.status_code == 400
        assert "tf.Example" in reply.json()["error"] and ":predict" in reply.json()["error"]
        missing = httpx.post(f"{server.url}/v1/models/nope/versions/1:{verb}", json={})
        assert missing.status_code == 404


def test_swagger_examples_run_as_prefilled(server):
    """What Swagger UI's Try it out sends unchanged: the path and body examples."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/v1/models/{name}:predict", "/v1/models/{name}:compare"):
        operation = document["paths"][path]["post"]
        [name] = [p["example"] for p in operation["parameters"] if p["name"] == "name"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        url = server.url + path.replace("{name}", name)
        reply = httpx.post(url, json=schema["example"], timeout=120)
        assert reply.status_code == 200, (path, reply.text)
