"""Start-up: device choice, what is imported where, a bad model on disk."""

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.service.conftest import REPO, free_port, serving


def test_cuda_demanded_without_cuda_refuses_to_start(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--port",
            str(free_port()),
            "--models-dir",
            str(tmp_path),
            "--device",
            "cuda",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "FOLDSERVE_DEVICE=cuda but CUDA cannot be used" in result.stdout + result.stderr


def test_invalid_setting_is_reported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--models-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"FOLDSERVE_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "invalid setting" in result.stderr


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_tensorflow_stays_out_of_the_serving_process(server, digits):
    httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": [[0.0] * 64]})
    maps = mapped_libraries(server.process.pid)
    assert "onnxruntime" in maps
    assert "tensorflow" not in maps.lower()


def test_a_broken_model_on_disk_does_not_stop_the_others(tmp_path, server):
    models = tmp_path / "models"
    (models / "broken" / "1").mkdir(parents=True)
    (models / "broken" / "1" / "model.keras").write_bytes(b"not a zip")
    (models / "stale" / "1").mkdir(parents=True)
    (models / "stale" / "1" / "model.onnx").write_bytes(b"not onnx either")
    (models / "README.md").write_text("not a model")
    (models / "bare" / "1").mkdir(parents=True)
    shutil.copy(server.models_dir / "digits" / "1" / "model.onnx", models / "bare" / "1")
    with serving(models, env={"FOLDSERVE_DEVICE": "cpu"}) as running:
        listing = httpx.get(f"{running.url}/v1/models").json()["models"]
        states = {m["name"]: m["versions"][0]["state"] for m in listing}
        assert states == {"bare": "AVAILABLE", "broken": "UNAVAILABLE", "stale": "UNAVAILABLE"}
        rows = {"instances": [[0.0] * 64]}
        assert httpx.post(f"{running.url}/v1/models/bare:predict", json=rows).status_code == 200
        compared = httpx.post(f"{running.url}/v1/models/bare:compare", json=rows)
        assert compared.status_code == 404 and "unfolded.onnx" in compared.json()["error"]
        keras = httpx.post(
            f"{running.url}/v1/models/bare:compare", json={**rows, "reference": "keras"}
        )
        assert keras.status_code == 404
        reply = httpx.post(f"{running.url}/v1/models/broken:predict", json={"instances": [[0]]})
        assert reply.status_code == 404 and "could be loaded" in reply.json()["error"]
        assert httpx.get(f"{running.url}/v2").json()["execution_provider"] == "CPUExecutionProvider"
