"""The client commands (``foldserve upload | jobs | list | ...``) against a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from service import client as cli
from tests.service.conftest import REPO


def foldserve(*args: str, url: str, token: str | None = None, timeout: float = 300):
    """Run the command as a user does; returns (exit code, stdout, stderr)."""
    command = [sys.executable, "-m", "service.cli", *args, "--url", url]
    if token is not None:
        command += ["--token", token]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stdout, done.stderr


def rows(digits, count: int) -> list[list[float]]:
    return digits.data[:count].astype("float32").tolist()


def test_list_as_table_and_as_json(server):
    code, out, _ = foldserve("list", url=server.url)
    assert code == cli.EXIT_OK
    assert "digits" in out and "AVAILABLE" in out
    code, out, _ = foldserve("list", "--json", url=server.url)
    listing = json.loads(out)["models"]
    versions = next(model["versions"] for model in listing if model["name"] == "digits")
    assert any(entry["version"] == 1 and entry["state"] == "AVAILABLE" for entry in versions)


def test_predict_from_json_and_from_npy_agree(server, digits, tmp_path):
    code, out, _ = foldserve(
        "predict", "digits", "--data", json.dumps(rows(digits, 3)), url=server.url
    )
    assert code == cli.EXIT_OK
    from_json = np.array(json.loads(out))
    assert from_json.shape == (3, 10)
    np.testing.assert_allclose(from_json.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / "rows.npy"
    np.save(path, digits.data[:3].astype("float32"))
    code, out, _ = foldserve("predict", "digits", "--file", str(path), url=server.url)
    assert code == cli.EXIT_OK
    np.testing.assert_allclose(np.array(json.loads(out)), from_json, rtol=1e-6)
    assert list(from_json.argmax(axis=1)) == list(digits.target[:3])


def test_compare_with_keras_reference(server, digits):
    data = json.dumps(rows(digits, 4))
    code, out, _ = foldserve(
        "compare", "digits", "--data", data, "--reference", "keras", url=server.url
    )
    assert code == cli.EXIT_OK, out
    assert "verdict: passed" in out and "keras" in out
    code, out, _ = foldserve(
        "compare", "digits", "--data", data, "--repeats", "3", "--json", url=server.url
    )
    answer = json.loads(out)
    assert answer["verdict"]["passed"] and answer["latency"]["repeats"] >= 3
    assert len(answer["outputs"]["probabilities"]["folded"]) == 4


def test_upload_download_delete_round_trip(server, trained_model_file, digits, tmp_path):
    code, out, err = foldserve(
        "upload", str(trained_model_file), "--name", "cli-digits", "--json", url=server.url
    )
    assert code == cli.EXIT_OK, err
    job = json.loads(out)
    assert job["state"] == "done" and job["name"] == "cli-digits"
    assert job["report"]["verification"]["passed"]
    version = str(job["version"])

    target = tmp_path / "downloaded.onnx"
    code, _, err = foldserve(
        "download",
        "cli-digits",
        "model.onnx",
        "--version",
        version,
        "-o",
        str(target),
        url=server.url,
    )
    assert code == cli.EXIT_OK, err
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    local = session.run(None, {session.get_inputs()[0].name: digits.data[:5].astype("float32")})
    code, out, _ = foldserve(
        "predict", "cli-digits", "--data", json.dumps(rows(digits, 5)), url=server.url
    )
    np.testing.assert_allclose(np.array(json.loads(out)), local[0], rtol=1e-5, atol=1e-7)

    code, out, _ = foldserve("delete", "cli-digits", url=server.url)
    assert code == cli.EXIT_OK and "deleted cli-digits" in out
    code, _, err = foldserve("delete", "cli-digits", url=server.url)
    assert code == cli.EXIT_NOT_FOUND and "cli-digits" in err


def test_upload_progress_is_shown_stage_by_stage(server, trained_model_file):
    code, out, err = foldserve(
        "upload", str(trained_model_file), "--name", "cli-stages", url=server.url
    )
    assert code == cli.EXIT_OK, err
    assert "cli-stages version 1 is served" in out
    assert "folded backward" in out and "verification passed" in out
    foldserve("delete", "cli-stages", url=server.url)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("predict", "no-such-model", "--data", "[[1]]"), cli.EXIT_NOT_FOUND, "no-such-model"),
        (("predict", "digits", "--data", "[[1, 2"), cli.EXIT_USAGE, "--data is not JSON"),
        (("predict", "digits", "--data", "[[1, 2]]"), cli.EXIT_REFUSED, "shape"),
        (("predict", "digits"), cli.EXIT_USAGE, "--data JSON or as --file"),
        (("upload", "/no/such/model.keras"), cli.EXIT_USAGE, "/no/such/model.keras"),
        (("jobs", "--cancel"), cli.EXIT_USAGE, "need a job id"),
    ],
)
def test_errors_have_meaningful_exit_codes(server, args, code, fragment):
    got, _, err = foldserve(*args, url=server.url)
    assert got == code, err
    assert fragment in err
    assert "Traceback" not in err


def test_unreachable_server(tmp_path):
    got, _, err = foldserve("list", url="http://127.0.0.1:9")
    assert got == cli.EXIT_UNAVAILABLE
    assert "cannot reach http://127.0.0.1:9" in err


def test_tokens(guarded_server, trained_model_file):
    got, _, err = foldserve("list", url=guarded_server.url)
    assert got == cli.EXIT_AUTH and "token" in err.lower()
    got, out, _ = foldserve("list", url=guarded_server.url, token="reader-secret")
    assert got == cli.EXIT_OK and "digits" in out
    got, _, err = foldserve(
        "delete", "digits", "--version", "1", url=guarded_server.url, token="reader-secret"
    )
    assert got == cli.EXIT_AUTH
    got, out, _ = foldserve("list", "--json", url=guarded_server.url, token="admin-secret")
    assert got == cli.EXIT_OK and json.loads(out)["models"][0]["name"] == "digits"


def test_detached_upload_then_jobs_watch_show_and_list(server, trained_model_file):
    code, out, err = foldserve(
        "upload", str(trained_model_file), "--name", "cli-detached", "--detach", url=server.url
    )
    assert code == cli.EXIT_OK, err
    job_id = out.strip()
    assert len(job_id) == 32
    code, out, err = foldserve("jobs", job_id, "--watch", "--json", url=server.url)
    assert code == cli.EXIT_OK, err
    job = json.loads(out)
    assert job["id"] == job_id and job["state"] == "done"
    assert {"loading", "folding", "exporting", "verifying"} <= set(job["timings"])
    code, out, _ = foldserve("jobs", job_id, url=server.url)
    assert code == cli.EXIT_OK and "done" in out and "cli-detached v1" in out
    code, out, _ = foldserve("jobs", "--json", url=server.url)
    assert job_id in [entry["id"] for entry in json.loads(out)["jobs"]]
    code, out, _ = foldserve("jobs", url=server.url)
    assert job_id[:12] in out
    code, _, err = foldserve("jobs", job_id, "--cancel", url=server.url)
    assert code == cli.EXIT_REFUSED and "finished" in err.lower()
    code, _, err = foldserve("jobs", "0" * 32, url=server.url)
    assert code == cli.EXIT_NOT_FOUND
    foldserve("delete", "cli-detached", url=server.url)


def test_a_failed_fold_exits_non_zero_with_the_reason(guarded_server, trained_model_file):
    """The guarded server's tolerance (1e-15, no noise allowance) fails every fold."""
    code, out, err = foldserve(
        "upload",
        str(trained_model_file),
        "--name",
        "cli-strict",
        url=guarded_server.url,
        token="admin-secret",
    )
    assert code == cli.EXIT_REFUSED
    assert "verification" in err.lower() or "fold" in err.lower()
    assert "Traceback" not in err
    code, out, _ = foldserve("list", "--json", url=guarded_server.url, token="admin-secret")
    names = [model["name"] for model in json.loads(out)["models"]]
    assert "cli-strict" not in names or all(
        entry["state"] != "AVAILABLE"
        for model in json.loads(out)["models"]
        if model["name"] == "cli-strict"
        for entry in model["versions"]
    )
