"""Uploads as jobs, through HTTP on real servers: 202 and polling, the event stream,
cancelling, jobs seen from another server on the same repository, artifacts."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import numpy as np
import pytest

from tests.helpers import OCTETS, upload_file, wait_until
from tests.service.conftest import make_repository, serving

# the order a user sees, written here rather than taken from the server's own table
STAGES = ["queued", "loading", "folding", "exporting"]
STAGES += ["verifying", "quantizing", "committing", "done"]
ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}


def submit(server, path, name, headers=None):
    return upload_file(
        server, path, name, wait=False, headers=headers, timeout=60, content_type=OCTETS
    )


def poll(server, job_id, until, timeout=300, headers=None):
    last: list[dict] = []

    def reached() -> dict | None:
        last[:] = [httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json()]
        return last[0] if until(last[0]) else None

    try:
        return wait_until(reached, timeout)
    except TimeoutError:
        raise AssertionError(f"job {job_id} never reached the expected state: {last}") from None


def finished(job):
    return job["state"] in ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def slow_model_file(tmp_path_factory):
    """A conv network whose fold takes seconds: long enough to watch and cancel."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((96, 96, 3), name="image")
    x = inputs
    for _ in range(12):
        x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="scores")(x)
    path = tmp_path_factory.mktemp("slow") / "slow.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory):
    models = make_repository(tmp_path_factory.mktemp("jobs"))
    with serving(models) as running:
        yield running


def test_upload_answers_202_then_the_job_runs_to_done(jobs_server, trained_model_file):
    reply = submit(jobs_server, trained_model_file, "polled")
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert reply.headers["location"] == f"/v1/jobs/{job['id']}"
    assert re.fullmatch("[0-9a-f]{32}", job["id"]), job["id"]
    assert (job["name"], job["version"], job["filename"]) == ("polled", 1, trained_model_file.name)
    assert job["state"] in STAGES
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "events": f"/v1/jobs/{job['id']}/events",
        "model": "/v1/models/polled/versions/1",
    }
    done = poll(jobs_server, job["id"], finished)
    assert done["state"] == "done", done
    assert done["error"] is None and done["status_code"] is None
    assert done["report"]["verification"]["passed"] is True
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert {"loading", "folding", "exporting", "verifying", "committing"} <= set(done["timings"])
    assert all(seconds >= 0 for seconds in done["timings"].values())
    listed = httpx.get(f"{jobs_server.url}/v1/jobs").json()["jobs"]
    assert listed[0]["id"] == job["id"]
    assert len(httpx.get(f"{jobs_server.url}/v1/jobs", params={"limit": 1}).json()["jobs"]) == 1
    status = httpx.get(f"{jobs_server.url}/v1/models/polled").json()["model_version_status"]
    assert status == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]


def test_artifacts_are_the_stored_files(jobs_server, trained_model_file):
    import onnxruntime

    reply = submit(jobs_server, trained_model_file, "fetched")
    poll(jobs_server, reply.json()["id"], finished)
    stored = jobs_server.models_dir / "fetched" / "1"
    base = f"{jobs_server.url}/v1/models/fetched/versions"
    report = httpx.get(f"{base}/1/report")
    assert report.headers["content-type"] == "application/json"
    assert report.json() == json.loads((stored / "report.json").read_text())
    for file_name in ("model.onnx", "unfolded.onnx"):
        for version in ("1", "latest"):
            download = httpx.get(f"{base}/{version}/{file_name}")
            assert download.status_code == 200
            assert download.headers["content-type"] == "application/octet-stream"
            assert download.headers["content-disposition"] == (
                f'attachment; filename="fetched-1-{file_name}"'
            )
            assert download.content == (stored / file_name).read_bytes()
    session = onnxruntime.InferenceSession(
        httpx.get(f"{base}/latest/model.onnx").content, providers=["CPUExecutionProvider"]
    )
    rows = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    (scores,) = session.run(None, {session.get_inputs()[0].name: rows})
    served = httpx.post(
        f"{jobs_server.url}/v1/models/fetched:predict", json={"instances": rows.tolist()}
    ).json()["predictions"]
    np.testing.assert_allclose(scores, served, rtol=1e-5, atol=1e-6)
    for missing, fragment in [
        (f"{base}/9/model.onnx", "no version 9"),
        (f"{jobs_server.url}/v1/models/nope/versions/1/report", "no model named 'nope'"),
        (f"{jobs_server.url}/v1/models/nope/versions/latest/unfolded.onnx", "nope"),
    ]:
        reply = httpx.get(missing)
        assert reply.status_code == 404 and fragment in reply.json()["error"], reply.text


def test_event_stream_follows_the_job_to_its_end(jobs_server, trained_model_file):
    job = submit(jobs_server, trained_model_file, "streamed").json()
    events = []
    with httpx.stream("GET", f"{jobs_server.url}{job['links']['events']}", timeout=120) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                assert kind == "job"
                events.append(json.loads(line[len("data: ") :]))
    states = [event["state"] for event in events]
    assert states[-1] == "done"  # and the stream ended after it
    assert "done" not in states[:-1]
    order = [STAGES.index(state) for state in states]
    assert order == sorted(order), states
    assert all(event["id"] == job["id"] for event in events)
    assert events[-1]["report"]["verification"]["passed"] is True


def test_cancel_queued_and_running_jobs(jobs_server, slow_model_file, trained_model_file):
    url = jobs_server.url
    running = submit(jobs_server, slow_model_file, "slow").json()
    queued = submit(jobs_server, trained_model_file, "waiting").json()
    poll(jobs_server, running["id"], lambda job: job["state"] not in ("queued", "loading"))
    assert httpx.get(f"{url}/v1/jobs/{queued['id']}").json()["state"] == "queued"

    # while it folds, the version is LOADING in TF Serving's status and the V2 index
    (status,) = httpx.get(f"{url}/v1/models/slow").json()["model_version_status"]
    assert (status["version"], status["state"]) == ("1", "LOADING")
    index = httpx.post(f"{url}/v2/repository/index").json()
    (entry,) = [entry for entry in index if entry["name"] == "slow"]
    assert entry["state"] == "LOADING"
    assert any(stage in entry["reason"] for stage in STAGES[2:7]), entry

    cancelled = httpx.delete(f"{url}/v1/jobs/{queued['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    cancelled = httpx.delete(f"{url}/v1/jobs/{running['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    again = httpx.delete(f"{url}/v1/jobs/{running['id']}")
    assert again.status_code == 409 and "already finished" in again.json()["error"]

    assert not (jobs_server.models_dir / "slow").exists()
    assert not (jobs_server.models_dir / "waiting").exists()
    assert list((jobs_server.models_dir / ".staging").iterdir()) == []
    names = [model["name"] for model in httpx.get(f"{url}/v1/models").json()["models"]]
    assert "slow" not in names and "waiting" not in names
    assert httpx.get(f"{url}/v1/models/slow").status_code == 404
    # a fresh fold worker takes the next upload
    with open(trained_model_file, "rb") as handle:
        reply = httpx.post(
            f"{url}/v1/models?wait=true",
            files={"file": (trained_model_file.name, handle)},
            data={"name": "after-cancel"},
            timeout=300,
        )
    assert reply.status_code == 201, reply.text
    assert reply.json()["version"] == 1


def test_unknown_jobs_are_404(jobs_server):
    for job_id in ("0" * 32, "not-a-job", "..%2F..%2Fetc"):
        for method in ("GET", "DELETE"):
            reply = httpx.request(method, f"{jobs_server.url}/v1/jobs/{job_id}")
            assert reply.status_code == 404 and "error" in reply.json(), reply.text
    reply = httpx.get(f"{jobs_server.url}/v1/jobs/{'f' * 32}/events")
    assert reply.status_code == 404 and "no job" in reply.json()["error"]
    reply = httpx.get(f"{jobs_server.url}/v1/jobs", params={"limit": 0})
    assert reply.status_code == 400 and "limit" in reply.json()["error"]


def test_jobs_are_shared_by_servers_on_one_repository(
    tmp_path, server, slow_model_file, trained_model_file
):
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    with serving(models) as first, serving(models) as second:
        job = submit(first, trained_model_file, "shared").json()
        seen = poll(second, job["id"], finished)
        assert seen["state"] == "done" and seen["version"] == 1
        # the version number is taken at submission, whichever server is asked next
        slow = submit(first, slow_model_file, "shared").json()
        assert slow["version"] == 2
        poll(second, slow["id"], lambda job: job["state"] not in ("queued", "loading"))
        (status,) = [
            entry
            for entry in httpx.get(f"{second.url}/v1/models/shared").json()["model_version_status"]
            if entry["version"] == "2"
        ]
        assert status["state"] == "LOADING"
        cancelled = httpx.delete(f"{second.url}/v1/jobs/{slow['id']}", timeout=30)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        assert httpx.get(f"{first.url}/v1/jobs/{slow['id']}").json()["state"] == "cancelled"
        assert sorted(path.name for path in (models / "shared").iterdir()) == ["1"]


def test_jobs_need_tokens(guarded_server):
    url = guarded_server.url
    assert httpx.get(f"{url}/v1/jobs").status_code == 401
    assert httpx.get(f"{url}/v1/jobs", headers=READER).status_code == 200
    assert httpx.get(f"{url}/v1/jobs/{'0' * 32}/events").status_code == 401
    assert httpx.delete(f"{url}/v1/jobs/{'0' * 32}", headers=READER).status_code == 401
    assert httpx.delete(f"{url}/v1/jobs/{'0' * 32}", headers=ADMIN).status_code == 404
    assert httpx.get(f"{url}/v1/models/digits/versions/1/report").status_code == 401
    reply = httpx.get(f"{url}/v1/models/digits/versions/1/model.onnx", headers=READER)
    stored = guarded_server.models_dir / "digits" / "1" / "model.onnx"
    assert reply.status_code == 200 and reply.content == stored.read_bytes()
