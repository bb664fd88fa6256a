"""Dynamic batching through HTTP: exact results, isolation of bad requests, statistics."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.service.conftest import serving

HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory, server):
    models = tmp_path_factory.mktemp("batching") / "models"
    configs = {
        "batched": {"max_batch_size": 16, "max_queue_delay_microseconds": 100_000},
        "unbatched": {"enabled": False},
    }
    for name, batching in configs.items():
        shutil.copytree(server.models_dir / "digits", models / name)
        (models / name / "config.json").write_text(json.dumps({"dynamic_batching": batching}))
    with serving(models) as running:
        yield running


def infer_binary(url: str, model: str, rows: np.ndarray) -> httpx.Response:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return httpx.post(
        f"{url}/v2/models/{model}/infer",
        content=header + rows.tobytes(),
        headers={HEADER: str(len(header))},
        timeout=30,
    )


def decode(reply: httpx.Response) -> np.ndarray:
    length = int(reply.headers[HEADER])
    shape = json.loads(reply.content[:length])["outputs"][0]["shape"]
    return np.frombuffer(reply.content[length:], np.float32).reshape(shape)


def stats(url: str, model: str) -> dict:
    return httpx.get(f"{url}/v2/models/{model}/stats").json()["model_stats"][0]


def test_batched_answers_are_bit_identical_to_unbatched(batching_server, digits):
    url = batching_server.url
    requests = [digits.data[i : i + 1 + i % 4].astype(np.float32) for i in range(0, 96, 3)]
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        batched = list(pool.map(lambda rows: infer_binary(url, "batched", rows), requests))
    unbatched = [infer_binary(url, "unbatched", rows) for rows in requests]
    for rows, with_batching, without in zip(requests, batched, unbatched, strict=True):
        assert with_batching.status_code == 200 and without.status_code == 200
        assert decode(with_batching).shape == (len(rows), 10)
        assert decode(with_batching).tobytes() == decode(without).tobytes()

    merged = stats(url, "batched")
    assert merged["inference_count"] == sum(len(rows) for rows in requests)
    assert merged["execution_count"] < len(requests)
    assert max(entry["batch_size"] for entry in merged["batch_stats"]) > 4
    assert merged["inference_stats"]["queue"]["count"] == len(requests)
    alone = stats(url, "unbatched")
    assert alone["execution_count"] == len(requests)


def test_a_bad_request_never_fails_its_batch(batching_server, digits):
    url = batching_server.url
    good = [digits.data[i : i + 2].astype(np.float32) for i in range(0, 20, 2)]
    bad = np.zeros((2, 63), np.float32)
    payloads = [*good[:5], bad, *good[5:]]
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        replies = list(pool.map(lambda rows: infer_binary(url, "batched", rows), payloads))
    statuses = [reply.status_code for reply in replies]
    assert statuses == [200] * 5 + [400] + [200] * 5
    assert "[2, 63]" in replies[5].json()["error"]
    for rows, reply in zip(good, replies[:5] + replies[6:], strict=True):
        assert np.argmax(decode(reply), axis=1).shape == (len(rows),)


def test_a_large_request_runs_on_its_own(batching_server, digits):
    rows = digits.data[:40].astype(np.float32)
    reply = infer_binary(batching_server.url, "batched", rows)
    assert reply.status_code == 200 and decode(reply).shape == (40, 10)
    sizes = [entry["batch_size"] for entry in stats(batching_server.url, "batched")["batch_stats"]]
    assert 40 in sizes and max(sizes) == 40


def test_statistics_through_the_triton_client(batching_server):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{batching_server.port}")
    everything = client.get_inference_statistics()
    assert {entry["name"] for entry in everything["model_stats"]} == {"batched", "unbatched"}
    one = client.get_inference_statistics("batched", "1")
    assert one["model_stats"][0]["version"] == "1"
    client.close()
    text = httpx.get(f"{batching_server.url}/metrics").text
    assert 'foldserve_batch_size_bucket{le="16.0",model="batched"}' in text
    assert "foldserve_queue_duration_seconds_count" in text
    assert "foldserve_compute_duration_seconds_count" in text
