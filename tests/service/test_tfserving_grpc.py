"""TensorFlow Serving's gRPC API, spoken by the official tensorflow-serving-api stubs."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.service.conftest import folded_copy, serving_grpc
from tests.service.test_grpc import grpc_calls

TOKEN = "reader-secret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def tf_server(tmp_path_factory, server):
    """The demo model (already folded by ``server``) behind an API token, with gRPC on."""
    models = folded_copy(tmp_path_factory, server, "tfgrpc")
    with serving_grpc(models, {"FOLDSERVE_API_TOKEN": TOKEN}) as running:
        running.channel = grpc.insecure_channel(running.grpc_url)
        yield running
        running.channel.close()


@pytest.fixture
def prediction(tf_server):
    return prediction_service_pb2_grpc.PredictionServiceStub(tf_server.channel)


def predict_request(rows: np.ndarray, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(rows))
    return request


def failure(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_predict_matches_the_rest_api(prediction, tf_server, digits):
    rows = digits.data[:5].astype(np.float32)
    reply = prediction.Predict(predict_request(rows), metadata=AUTH, timeout=30)
    probabilities = tf.make_ndarray(reply.outputs["probabilities"])
    rest = httpx.post(
        f"{tf_server.url}/v1/models/digits:predict",
        json={"instances": rows.tolist()},
        headers={"authorization": f"Bearer {TOKEN}"},
    ).json()["predictions"]
    np.testing.assert_allclose(probabilities, np.asarray(rest), rtol=1e-6, atol=1e-7)
    assert probabilities.shape == (5, 10)
    assert (probabilities.argmax(axis=1) == digits.target[:5]).mean() >= 0.8
    # written as TF Serving writes it: in the typed field, which tutorials read directly
    assert len(reply.outputs["probabilities"].float_val) == 50
    assert reply.model_spec.name == "digits"
    assert reply.model_spec.version.value == 1
    assert reply.model_spec.signature_name == "serving_default"


def test_predict_with_typed_values_version_signature_and_output_filter(prediction, digits):
    rows = digits.data[:2].astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.model_spec.version.value = 1
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["pixels"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=64)
    tensor.float_val.extend(rows.ravel().tolist())
    request.output_filter.append("probabilities")
    reply = prediction.Predict(request, metadata=AUTH, timeout=30)
    assert list(reply.outputs) == ["probabilities"]
    assert tf.make_ndarray(reply.outputs["probabilities"]).shape == (2, 10)


def test_get_model_metadata_has_the_signature_def(prediction):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "digits"
    request.metadata_field.append("signature_def")
    reply = prediction.GetModelMetadata(request, metadata=AUTH, timeout=30)
    assert reply.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    pixels = signature.inputs["pixels"]
    assert pixels.dtype == tf.float32.as_datatype_enum
    assert [dim.size for dim in pixels.tensor_shape.dim] == [-1, 64]
    assert list(signature.outputs) == ["probabilities"]

    request.metadata_field[:] = ["graph_def"]
    code, details = failure(lambda: prediction.GetModelMetadata(request, metadata=AUTH))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "signature_def" in details


def test_get_model_status(tf_server):
    models = model_service_pb2_grpc.ModelServiceStub(tf_server.channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "digits"
    reply = models.GetModelStatus(request, metadata=AUTH, timeout=30)
    [status] = reply.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""

    request.model_spec.name = "nope"
    code, _ = failure(lambda: models.GetModelStatus(request, metadata=AUTH))
    assert code == grpc.StatusCode.NOT_FOUND


def test_errors_are_grpc_status_codes_with_reasons(prediction, digits):
    rows = digits.data[:1].astype(np.float32)
    cases = {
        "nope": predict_request(rows),
        "signature": predict_request(rows, signature_name="classify"),
        "label": predict_request(rows, version_label="stable"),
        "version": predict_request(rows, version=7),
        "dtype": predict_request(rows.astype(np.float64)),
        "shape": predict_request(rows[:, :63]),
    }
    cases["nope"].model_spec.name = "nope"
    expected = {
        "nope": (grpc.StatusCode.NOT_FOUND, "nope"),
        "signature": (grpc.StatusCode.INVALID_ARGUMENT, "serving_default"),
        "label": (grpc.StatusCode.INVALID_ARGUMENT, "version_label"),
        "version": (grpc.StatusCode.NOT_FOUND, "7"),
        "dtype": (grpc.StatusCode.INVALID_ARGUMENT, "DT_DOUBLE"),
        "shape": (grpc.StatusCode.INVALID_ARGUMENT, "63"),
    }
    for case, request in cases.items():
        code, details = failure(lambda request=request: prediction.Predict(request, metadata=AUTH))
        assert (code, expected[case][1] in details) == (expected[case][0], True), (case, details)

    code, details = failure(lambda: prediction.Predict(predict_request(rows)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in details


def test_classify_and_regress_say_why_not_and_what_to_call(prediction):
    for call, request in (
        (prediction.Classify, classification_pb2.ClassificationRequest()),
        (prediction.Regress, regression_pb2.RegressionRequest()),
    ):
        request.model_spec.name = "digits"
        code, details = failure(lambda call=call, request=request: call(request, metadata=AUTH))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert "tf.Example" in details and "Predict" in details


def test_predict_is_counted_and_batched_like_the_other_paths(prediction, tf_server, digits):
    headers = {"authorization": f"Bearer {TOKEN}"}

    def inferences() -> int:
        stats = httpx.get(f"{tf_server.url}/v2/models/digits/stats", headers=headers).json()
        return stats["model_stats"][0]["inference_count"]

    before_count = inferences()
    before = httpx.get(f"{tf_server.url}/metrics", headers=headers).text
    rows = digits.data[:3].astype(np.float32)
    for _ in range(2):
        prediction.Predict(predict_request(rows), metadata=AUTH, timeout=30)
    after = httpx.get(f"{tf_server.url}/metrics", headers=headers).text
    assert inferences() - before_count == 6
    call = ("digits", "Predict", "OK", "tensorflow.serving.PredictionService")
    assert grpc_calls(after, *call) - grpc_calls(before, *call) == 2
