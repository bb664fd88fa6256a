"""Upload jobs and the client under abuse, on real servers: damaged job files, many jobs,
a server killed mid-job, a delete racing its upload, a client pointed at something that
is not a foldserve server."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time

import httpx
import pytest

from tests.service.conftest import DEMO_SOURCE, Server, make_repository, serving
from tests.service.test_client import foldserve
from tests.service.test_jobs import finished, poll, submit


@pytest.fixture(scope="module")
def short_history_server(tmp_path_factory):
    models = make_repository(tmp_path_factory.mktemp("history"))
    with serving(models, {"FOLDSERVE_JOB_HISTORY": "2"}) as running:
        yield running


def upload_garbage(server, name):
    """An upload the fold worker refuses at once: a job that fails quickly."""
    files = {"file": ("broken.onnx", b"not an onnx model", "application/octet-stream")}
    reply = httpx.post(f"{server.url}/v1/models", files=files, data={"name": name}, timeout=60)
    assert reply.status_code == 202, reply.text
    return reply.json()


def test_damaged_job_files_are_left_out(short_history_server):
    jobs = short_history_server.models_dir / ".jobs"
    damaged = {
        "a" * 32: {"id": "a" * 32, "state": "done"},
        "b" * 32: {
            "id": "b" * 32,
            "state": "loading",
            "name": "digits",
            "version": 9,
            "created_at": "yesterday",
            "owner": "nobody",
        },
        "c" * 32: {
            "id": "c" * 32,
            "state": "folding",
            "name": "x",
            "version": 1,
            "created_at": 1.0,
            "owner": {"pid": 10**30},
        },
        "d" * 32: {"id": "e" * 32, "state": "done", "name": "x", "version": 1, "created_at": 1.0},
    }
    for job_id, content in damaged.items():
        (jobs / f"{job_id}.json").write_text(json.dumps(content))
    (jobs / f"{'f' * 32}.json").write_text("[" * 100000)
    try:
        url = short_history_server.url
        listed = httpx.get(f"{url}/v1/jobs")
        assert listed.status_code == 200, listed.text
        assert not {job["id"] for job in listed.json()["jobs"]} & {*damaged, "f" * 32}
        assert httpx.get(f"{url}/v1/models").status_code == 200
        assert httpx.get(f"{url}/v1/models/digits").status_code == 200
        for job_id in [*damaged, "f" * 32]:
            reply = httpx.get(f"{url}/v1/jobs/{job_id}")
            assert reply.status_code == 404 and "no job" in reply.json()["error"], reply.text
    finally:
        for job_id in [*damaged, "f" * 32]:
            (jobs / f"{job_id}.json").unlink()


def test_finished_jobs_are_pruned_while_the_server_runs(short_history_server):
    for index in range(4):
        job = upload_garbage(short_history_server, f"pruned{index}")
        assert poll(short_history_server, job["id"], finished, timeout=60)["state"] == "failed"
    jobs = httpx.get(f"{short_history_server.url}/v1/jobs").json()["jobs"]
    # the two newest finished ones are kept, plus the last one (finished after the prune)
    assert len(jobs) <= 3, [job["name"] for job in jobs]
    assert jobs[0]["name"] == "pruned3"


def test_deleting_a_version_while_it_is_uploaded_is_a_409(short_history_server):
    url = short_history_server.url
    job = submit(short_history_server, DEMO_SOURCE, "racing").json()
    reply = httpx.delete(f"{url}/v1/models/racing/versions/{job['version']}")
    if reply.status_code != 409:  # the fold won the race: the delete must then succeed
        assert poll(short_history_server, job["id"], finished)["state"] == "done"
        assert reply.status_code == 200, reply.text
        return
    assert job["id"] in reply.json()["error"] and "cancel" in reply.json()["error"]
    assert poll(short_history_server, job["id"], finished, timeout=120)["state"] == "done"
    assert httpx.delete(f"{url}/v1/models/racing/versions/1").status_code == 200


def test_a_killed_server_leaves_no_staging_behind(tmp_path):
    models = make_repository(tmp_path)
    running = Server(models, {"FOLDSERVE_PREWARM_FOLDER": "false"})
    try:
        running.wait_ready()
        job = submit(running, DEMO_SOURCE, "killed").json()
        assert list((models / ".staging").iterdir())
    finally:
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
    with serving(models) as restarted:
        seen = httpx.get(f"{restarted.url}/v1/jobs/{job['id']}").json()
        assert seen["state"] == "failed" and seen["error"] == "interrupted", seen
        assert "staging" not in seen
        assert not [path for path in (models / ".staging").iterdir() if path.is_dir()]


class _Garbage(http.server.BaseHTTPRequestHandler):
    """Answers every request 200, with HTML or with JSON of the wrong shape."""

    def do_GET(self):
        body = b'{"jobs": [1, "x"]}' if self.path.startswith("/v1/jobs?") else b"<html>hi</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_DELETE = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def garbage_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "command",
    [["list"], ["list", "--json"], ["jobs"], ["jobs", "0" * 32, "--json"], ["delete", "x"]],
)
def test_the_client_reports_an_answer_it_does_not_understand(garbage_url, command):
    """HTML where JSON belongs, or JSON of another shape (``--json`` passes that through)."""
    as_json = "--json" in command
    code, out, err = foldserve(*command, url=garbage_url)
    assert code == 5 and "Traceback" not in err and "foldserve: error:" in err, err
    if as_json:
        assert "error" in json.loads(out)


def test_the_client_prints_json_when_the_server_is_down():
    started = time.monotonic()
    code, out, err = foldserve("list", "--json", url="http://127.0.0.1:1", timeout=60)
    assert code == 5 and "cannot reach" in json.loads(out)["error"], (out, err)
    assert time.monotonic() - started < 60
