"""Reproducers from an attack on the service: each once gave a 500, lost data or grew
without bound; each now gets a clear 4xx, or nothing at all happens."""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import zipfile

import httpx
import numpy as np
import pytest

from tests.helpers import wait_until
from tests.service.conftest import Server, make_repository, serving
from tests.service.test_bad_input import assert_error, store_snapshot
from tests.service.test_store import upload

INFER = "/v2/models/digits/infer"
ROW = [0.0] * 64


def v2_body(data, shape=(1, 64)):
    return {"inputs": [{"name": "pixels", "shape": list(shape), "datatype": "FP32", "data": data}]}


def test_metrics_do_not_grow_with_unknown_model_names(server):
    for index in range(200):
        httpx.post(f"{server.url}/v1/models/ghost-{index}:predict", json={"instances": [ROW]})
        httpx.get(f"{server.url}/v2/models/phantom-{index}")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "ghost-" not in metrics and "phantom-" not in metrics
    assert 'model="(unknown)"' in metrics
    httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": [ROW]})
    assert 'model="digits"' in httpx.get(f"{server.url}/metrics").text


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "fragment"),
    [
        ("post", "/v1/models/digits/versions/²:predict", {"json": {"instances": [ROW]}}, "version"),
        ("get", "/v2/models/digits/versions/" + "9" * 5000, {}, "version"),
        (
            "post",
            INFER,
            {
                "json": {
                    "inputs": [
                        {
                            "name": "pixels",
                            "shape": [2**62, 2**62],
                            "datatype": "FP32",
                            "data": ROW,
                        }
                    ]
                }
            },
            "each dimension must be between 0 and",
        ),
        (
            "post",
            INFER,
            {
                "json": {
                    "inputs": [
                        {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}
                    ],
                    "outputs": [{"name": "probabilities", "parameters": [1]}],
                }
            },
            "'parameters'",
        ),
        (
            "post",
            INFER,
            {"content": b"{}", "headers": {"Inference-Header-Content-Length": "²".encode()}},
            "Inference-Header-Content-Length",
        ),
        (
            "post",
            INFER,
            {"content": b"{}", "headers": {"Inference-Header-Content-Length": "1" * 5000}},
            "Inference-Header-Content-Length",
        ),
        ("post", "/v1/models/digits:predict", {"json": {"instances": [[1e39] * 64]}}, "range"),
        (
            "post",
            INFER,
            {
                "json": {
                    "inputs": [
                        {
                            "name": "pixels",
                            "shape": [1, 64],
                            "datatype": "FP32",
                            "data": [1e39] * 64,
                        }
                    ]
                }
            },
            "range",
        ),
    ],
)
def test_hostile_requests_get_a_400(server, method, path, kwargs, fragment):
    reply = getattr(httpx, method)(f"{server.url}{path}", **kwargs)
    assert_error(reply, 400, fragment)


def _keras_archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        # a config.json that inflates far past its limit (2 MB of zeros would be 2 GiB)
        ({"config.json": b" " * (65 * 1024 * 1024), "metadata.json": b"{}"}, "config.json"),
        # many entries
        ({**{f"assets/{i}": b"" for i in range(10_001)}, "config.json": b"{}"}, "entries"),
    ],
    ids=["inflating-config", "too-many-entries"],
)
def test_archive_bombs_are_refused_before_extraction(server, tmp_path, members, fragment):
    bomb = tmp_path / "bomb.keras"
    bomb.write_bytes(_keras_archive(members))
    before = store_snapshot(server)
    assert_error(upload(server, bomb, name="bomb"), 400, fragment)
    assert store_snapshot(server) == before


def test_archive_total_size_limit(tmp_path):
    models = make_repository(tmp_path)
    bomb = tmp_path / "big.keras"
    bomb.write_bytes(
        _keras_archive({"config.json": b"{}", **{f"w{i}": b"\0" * (2 << 20) for i in range(4)}})
    )
    env = {"FOLDSERVE_MAX_ARCHIVE_BYTES": str(4 << 20)}
    with serving(models, env) as running:
        assert_error(upload(running, bomb, name="big"), 400, "inflate")
        assert not (models / "big").exists()


def test_streamed_upload_over_the_limit_is_413(guarded_server):
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="m.keras"\r\n\r\n'
        for _ in range(64):
            yield b"\0" * 65536

    reply = httpx.post(
        f"{guarded_server.url}/v1/models",
        content=chunks(),
        headers={
            "Authorization": "Bearer admin-secret",
            "Content-Type": "multipart/form-data; boundary=x",
        },
    )
    assert_error(reply, 413, "limit")


def test_large_bodies_are_decoded_and_answered(server):
    rows = np.random.default_rng(0).uniform(0, 16, (3000, 64)).round(3).tolist()
    reply = httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": rows})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["predictions"]) == 3000


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in found.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead too
        return handle.read().split()[2] != "Z"


def test_fold_worker_dies_with_a_killed_server(tmp_path):
    running = Server(make_repository(tmp_path))
    try:
        running.wait_ready()
        workers = wait_until(
            lambda: [pid for pid in _children(running.process.pid) if _alive(pid)],
            60,
            interval=0.2,
            message="the fold worker was started",
        )
    finally:
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not any(_alive(pid) for pid in workers), 15, interval=0.2)
    assert not any(_alive(pid) for pid in workers)


def test_fold_job_over_the_memory_cap_is_a_422_and_the_server_lives(
    server, tmp_path, trained_model_file
):
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")  # already folded
    env = {"FOLDSERVE_FOLD_MEMORY_LIMIT_MB": "200", "FOLDSERVE_PREWARM_FOLDER": "false"}
    with serving(models, env) as running:
        before = store_snapshot(running)
        assert_error(upload(running, trained_model_file, name="heavy"), 422, "memory limit of 200")
        listing, files = store_snapshot(running)
        assert files == before[1]  # nothing stored; the failed version is listed with its reason
        heavy = [model["versions"] for model in listing["models"] if model["name"] == "heavy"]
        assert heavy == [[{"version": 1, "state": "UNAVAILABLE", "reason": heavy[0][0]["reason"]}]]
        assert "memory limit of 200" in heavy[0][0]["reason"]
        assert httpx.delete(f"{running.url}/v1/models/heavy").status_code == 200
        assert store_snapshot(running) == before
        reply = httpx.post(f"{running.url}/v1/models/digits:predict", json={"instances": [ROW]})
        assert reply.status_code == 200


def test_fold_job_writing_past_the_file_limit_is_a_507_and_nothing_is_stored(server, tmp_path):
    import keras

    inputs = keras.Input((256,))
    hidden = keras.layers.BatchNormalization()(keras.layers.Dense(1024)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))  # 1.1 MB of float32 weights
    path = tmp_path / "wide.keras"
    model.save(path)
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    env = {"FOLDSERVE_FOLD_FILE_LIMIT_MB": "1", "FOLDSERVE_PREWARM_FOLDER": "false"}
    with serving(models, env) as running:
        before = store_snapshot(running)
        reply = upload(running, path, name="wide")
        assert_error(reply, 507, "larger than the fold worker's limit of 1 MB")
        assert "FOLDSERVE_FOLD_FILE_LIMIT_MB" in reply.json()["error"]
        listing, files = store_snapshot(running)
        assert files == before[1]  # nothing stored; the failed version is listed with why
        wide = [model["versions"] for model in listing["models"] if model["name"] == "wide"]
        assert "limit of 1 MB" in wide[0][0]["reason"]
        reply = httpx.post(f"{running.url}/v1/models/digits:predict", json={"instances": [ROW]})
        assert reply.status_code == 200
