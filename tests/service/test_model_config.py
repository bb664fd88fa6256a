"""Triton's model configuration tells a client how the model is batched, over HTTP and
gRPC alike, read by the official tritonclient."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.service.conftest import folded_copy, serving_grpc


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory, server):
    """The demo model three times: batched (max 16, 500 us queue delay), with batching
    off, and batched by the server's defaults."""
    models = folded_copy(tmp_path_factory, server, "config")
    shutil.copytree(models / "digits", models / "batched")
    (models / "batched" / "config.json").write_text(
        json.dumps(
            {"dynamic_batching": {"max_batch_size": 16, "max_queue_delay_microseconds": 500}}
        )
    )
    shutil.copytree(models / "digits", models / "single")
    (models / "single" / "config.json").write_text(
        json.dumps({"dynamic_batching": {"enabled": False}})
    )
    with serving_grpc(models) as running:
        yield running


def test_batched_model_reports_its_batcher_as_triton_does(batching_server):
    http = triton_http.InferenceServerClient(batching_server.url.removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(batching_server.grpc_url)
    try:
        over_http = http.get_model_config("batched")
        over_grpc = grpc.get_model_config("batched", as_json=True)["config"]
    finally:
        http.close()
        grpc.close()
    assert over_http["max_batch_size"] == 16
    assert over_http["dynamic_batching"] == {
        "preferred_batch_size": [],
        "max_queue_delay_microseconds": 500,
    }
    assert over_http["input"] == [{"name": "pixels", "data_type": "TYPE_FP32", "dims": [64]}]
    assert over_http["output"][0]["dims"] == [10]
    assert over_grpc["max_batch_size"] == 16
    assert over_grpc["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
    assert over_grpc["input"][0]["dims"] == ["64"]


def test_unbatched_model_reports_zero_and_the_full_dims(batching_server):
    grpc = triton_grpc.InferenceServerClient(batching_server.grpc_url)
    try:
        over_grpc = grpc.get_model_config("single", as_json=True)["config"]
    finally:
        grpc.close()
    over_http = httpx.get(f"{batching_server.url}/v2/models/single/config").json()
    assert over_http["max_batch_size"] == 0 and "dynamic_batching" not in over_http
    assert over_http["input"][0]["dims"] == [-1, 64]
    assert over_grpc.get("max_batch_size", 0) == 0 and "dynamic_batching" not in over_grpc
    assert over_grpc["input"][0]["dims"] == ["-1", "64"]


def test_a_client_that_follows_the_config_gets_its_batch_served(batching_server):
    """What Triton's own samples do: prepend the batch axis when max_batch_size > 0."""
    http = triton_http.InferenceServerClient(batching_server.url.removeprefix("http://"))
    try:
        config = http.get_model_config("digits")
        [spec] = config["input"]
        batch = min(4, config["max_batch_size"])
        rows = np.zeros((batch, *spec["dims"]), np.float32)
        tensor = triton_http.InferInput(spec["name"], list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = http.infer("digits", [tensor])
    finally:
        http.close()
    assert config["max_batch_size"] > 0
    assert result.as_numpy(config["output"][0]["name"]).shape == (batch, 10)
