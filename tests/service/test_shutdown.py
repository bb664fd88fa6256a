"""SIGTERM: in-flight requests finish, nothing is reset, the server exits cleanly."""

import re
import shutil
import signal
import threading

import httpx

from tests.helpers import wait_until
from tests.service.conftest import Server, serving
from tests.service.test_store import upload


def upload_then_sigterm(server, tmp_path, model_file, environment=None):
    """An upload of ``model_file`` (as "late") to a server of its own, SIGTERM sent once
    the upload is staged; the reply, the models folder and the stopped server."""
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    running = Server(models, environment)
    try:
        running.wait_ready()
        replies = []
        sender = threading.Thread(
            target=lambda: replies.append(upload(running, model_file, name="late"))
        )
        sender.start()
        # the upload has reached the server and is being folded
        staged = models / ".staging"
        wait_until(lambda: list(staged.glob("*/*.keras")), 30, interval=0.02, message="staged")
        running.process.send_signal(signal.SIGTERM)
        sender.join(timeout=120)
        # uvicorn re-raises the signal once it has drained: exit by SIGTERM, not a crash
        assert running.process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        running.stop()
    (reply,) = replies
    return reply, models, running


def test_sigterm_lets_an_in_flight_upload_finish(server, tmp_path, trained_model_file):
    reply, models, running = upload_then_sigterm(server, tmp_path, trained_model_file)
    assert reply.status_code == 201, reply.text
    assert (models / "late" / "1" / "model.onnx").is_file()
    try:
        httpx.get(f"{running.url}/v2/health/ready", timeout=2)
    except httpx.TransportError:
        pass  # refused: the server is gone
    else:
        raise AssertionError("the server still answers after shutting down")


def test_sigterm_answers_a_waiting_upload_503_before_the_grace_runs_out(
    server, tmp_path, trained_model_file
):
    # no grace at all: the fold cannot finish in time, and uvicorn cancels what is left
    reply, models, _ = upload_then_sigterm(
        server, tmp_path, trained_model_file, {"FOLDSERVE_SHUTDOWN_TIMEOUT": "0"}
    )
    assert reply.status_code == 503, reply.text
    message = reply.json()["error"]
    found = re.match(r"the server is shutting down; job (\S+) \(late\) was still \w+ ", message)
    assert found, message
    assert "does not resume when the server restarts" in message
    assert not (models / "late" / "1" / "model.onnx").exists()
    # as the answer said: the job is failed, interrupted, once the server is back
    with serving(models) as again:
        job = httpx.get(f"{again.url}/v1/jobs/{found.group(1)}", timeout=10).json()
    assert job["state"] == "failed", job
    assert "interrupted" in job["error"], job
