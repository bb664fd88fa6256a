"""``foldserve serve --engine ray``: the same endpoints from Ray Serve replicas.

Ray lives in a venv of its own (``make ray-venv``: the serving-only install plus Ray, no
TensorFlow), so the Ray server is started from there as a user starts it: a local Ray
(2 CPUs, no dashboard) with two replicas behind Ray's HTTP proxy on 127.0.0.1, stopped
with SIGINT at the end. The demo model is folded by the plain ``server`` fixture, whose
answers are the reference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.engines.ray import REPLICA_HEADER, TIMING_HEADER, build, deployment_options
from service.settings import Settings
from tests.helpers import refused_upload, wait_until
from tests.service.conftest import REPO, Server, folded_copy

RAY_PYTHON = Path(os.environ.get("FOLDSERVE_RAY_PYTHON", REPO / ".venv-ray" / "bin" / "python"))
START_TIMEOUT = 120


class RayServer(Server):
    label = "Ray server"

    def __init__(self, models_dir: Path, *flags: str) -> None:
        env = {
            "PYTHONPATH": str(REPO),
            "FOLDSERVE_POLL_INTERVAL": "0.2",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        # a session of its own: whatever Ray leaves behind goes with the group
        super().__init__(
            models_dir,
            env,
            python=str(RAY_PYTHON),
            flags=("--engine", "ray", *flags),
            new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, server):
    if not RAY_PYTHON.exists():
        pytest.skip(f"no Ray venv at {RAY_PYTHON}: run 'make ray-venv'")
    models = folded_copy(tmp_path_factory, server, "ray")
    running = RayServer(models, "--replicas", "2", "--replica-cpus", "0.5")
    try:
        running.wait_ready(START_TIMEOUT)
        yield running
    finally:
        running.stop()


def test_tf_serving_predict_answers_like_the_plain_server(ray_server, server, digits):
    body = {"instances": digits.data[:5].tolist()}
    on_ray = httpx.post(f"{ray_server.url}/v1/models/digits:predict", json=body)
    plain = httpx.post(f"{server.url}/v1/models/digits:predict", json=body)
    assert on_ray.status_code == 200, on_ray.text
    assert on_ray.headers[REPLICA_HEADER]
    np.testing.assert_allclose(
        on_ray.json()["predictions"], plain.json()["predictions"], rtol=1e-6, atol=1e-7
    )


def test_v2_infer_answers_like_the_plain_server(ray_server, server, digits):
    rows = digits.data[5:8].astype("float32")
    body = {
        "id": "ray-1",
        "inputs": [
            {
                "name": "pixels",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ],
    }
    on_ray = httpx.post(f"{ray_server.url}/v2/models/digits/infer", json=body)
    plain = httpx.post(f"{server.url}/v2/models/digits/infer", json=body)
    assert on_ray.status_code == 200, on_ray.text
    answer, reference = on_ray.json(), plain.json()
    assert answer["id"] == "ray-1"
    assert answer["outputs"][0]["name"] == reference["outputs"][0]["name"]
    assert answer["outputs"][0]["shape"] == [3, 10]
    np.testing.assert_allclose(
        answer["outputs"][0]["data"], reference["outputs"][0]["data"], rtol=1e-6, atol=1e-7
    )


def test_each_answer_carries_the_replicas_own_timing(ray_server, digits):
    body = {"instances": digits.data[:1].tolist()}
    response = httpx.post(f"{ray_server.url}/v1/models/digits:predict", json=body)
    assert response.status_code == 200, response.text
    timings = {}
    for metric in response.headers[TIMING_HEADER].split(","):
        name, _, duration = metric.strip().partition(";dur=")
        timings[name] = float(duration)
    assert set(timings) == {"app", "receive"}
    assert 0 < timings["receive"] <= timings["app"]


def test_bad_input_is_a_400_naming_it(ray_server):
    response = httpx.post(
        f"{ray_server.url}/v1/models/digits:predict", json={"instances": [[1.0, 2.0]]}
    )
    assert response.status_code == 400
    assert "[-1, 64]" in response.json()["error"]


def replicas_answering(url: str, path: str, body: dict, requests: int = 48) -> dict[str, int]:
    """Which replicas answered ``requests`` POSTs sent 8 at a time, and how many each."""

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{url}{path}", json=body, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(requests)))
    counts: dict[str, int] = {}
    for response in responses:
        assert response.status_code == 200, response.text
        replica = response.headers[REPLICA_HEADER]
        counts[replica] = counts.get(replica, 0) + 1
    return counts


def test_two_replicas_both_answer(ray_server, digits):
    body = {"instances": digits.data[:2].tolist()}
    counts = replicas_answering(ray_server.url, "/v1/models/digits:predict", body)
    assert len(counts) == 2, counts


def test_a_model_added_to_the_repository_is_served_by_every_replica(ray_server, digits):
    # placed as a finished directory, the way a fold on another server publishes it
    incoming = ray_server.models_dir / ".incoming-added"
    shutil.copytree(ray_server.models_dir / "digits", incoming)
    os.replace(incoming, ray_server.models_dir / "added")
    body = {"instances": digits.data[:1].tolist()}
    seen: dict[str, int] = {}

    def served_by_both() -> bool:
        response = httpx.post(f"{ray_server.url}/v1/models/added:predict", json=body)
        if response.status_code == 200:
            replica = response.headers[REPLICA_HEADER]
            seen[replica] = seen.get(replica, 0) + 1
        else:
            assert response.status_code == 404, response.text
        return len(seen) == 2

    with contextlib.suppress(TimeoutError):
        wait_until(served_by_both, 30)
    assert len(seen) == 2, f"served by {seen} within 30 s"


def test_upload_is_refused_naming_where_folding_runs(ray_server, trained_model_file):
    error = refused_upload(ray_server, trained_model_file, wait=False)
    assert "Ray Serve replicas" in error
    assert "foldserve serve" in error
    assert "foldserve fold" in error


def test_autoscaling_settings_become_the_deployment_options():
    settings = Settings(replicas=3, min_replicas=1, max_replicas=4, target_ongoing_requests=5)
    options = deployment_options(settings)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 3,
        "max_replicas": 4,
        "target_ongoing_requests": 5.0,
    }
    fixed = deployment_options(Settings(replicas=2))
    assert fixed["num_replicas"] == 2
    assert "autoscaling_config" not in fixed


def test_inconsistent_autoscaling_bounds_are_refused():
    with pytest.raises(ValueError, match="min_replicas 5 is above max_replicas 2"):
        deployment_options(Settings(min_replicas=5, max_replicas=2))


def test_the_application_builder_refuses_unknown_settings():
    with pytest.raises(ValueError, match="unknown foldserve setting"):
        build({"models_dir": "models", "replica": "2"})
