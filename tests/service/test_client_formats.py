"""What users of TF Serving and of the other formats expect from the client and the JSON
APIs: NaN and Infinity, SavedModel directories, the source model as the compare reference,
the server's address from the variables that started it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import httpx
import numpy as np

from service import client as cli
from tests.service.conftest import REPO
from tests.service.test_client import foldserve


def non_finite_row() -> list[float]:
    return [math.nan, math.inf, -math.inf] + [0.5] * 61


def test_rest_reads_and_writes_nan_and_infinity_literals(server):
    body = b'{"instances": [[NaN, Infinity, -Infinity' + b", 0.5" * 61 + b"]]}"
    reply = httpx.post(f"{server.url}/v1/models/digits:predict", content=body)
    assert reply.status_code == 200, reply.text
    assert "NaN" in reply.text and "null" not in reply.text  # as TF Serving writes them
    [prediction] = json.loads(reply.text)["predictions"]  # Python's json reads them back
    assert len(prediction) == 10 and all(math.isnan(value) for value in prediction)

    finite = httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": [[0.5] * 64]})
    assert finite.status_code == 200 and "NaN" not in finite.text

    broken = httpx.post(f"{server.url}/v1/models/digits:predict", content=b'{"instances": [NaN')
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


def test_v2_json_reads_and_writes_nan(server):
    data = "[NaN, Infinity, -Infinity" + ", 0.5" * 61 + "]"
    tensor = f'{{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": {data}}}'
    body = f'{{"inputs": [{tensor}]}}'
    reply = httpx.post(f"{server.url}/v2/models/digits/infer", content=body.encode())
    assert reply.status_code == 200, reply.text
    [output] = json.loads(reply.text)["outputs"]
    assert all(math.isnan(value) for value in np.ravel(output["data"]))


def test_cli_predict_sends_and_prints_nan(server, tmp_path):
    code, out, err = foldserve(
        "predict", "digits", "--data", json.dumps([non_finite_row()]), url=server.url
    )
    assert code == cli.EXIT_OK, err
    assert "NaN" in out and np.isnan(np.array(json.loads(out))).all()
    path = tmp_path / "nan.npy"
    np.save(path, np.array([non_finite_row()], dtype=np.float32))
    code, out, err = foldserve("predict", "digits", "--file", str(path), url=server.url)
    assert code == cli.EXIT_OK, err
    assert np.array(json.loads(out)).shape == (1, 10)


def test_cli_finds_the_server_from_foldserve_host_and_port(server):
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("FOLDSERVE_")
    }
    environment.update({"FOLDSERVE_HOST": "0.0.0.0", "FOLDSERVE_PORT": str(server.port)})
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "list"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert "digits" in done.stdout
    assert cli.default_url({"FOLDSERVE_URL": "http://h:1"}) == "http://h:1"
    assert cli.default_url({"FOLDSERVE_HOST": "::1", "FOLDSERVE_PORT": "9"}) == "http://[::1]:9"
    assert cli.default_url({}) == cli.DEFAULT_URL


def test_upload_of_a_saved_model_directory_then_compare_with_its_source(
    server, saved_models, digits
):
    directory = saved_models["keras3_dense"]
    code, out, err = foldserve("upload", str(directory), "--name", "sm-directory", url=server.url)
    assert code == cli.EXIT_OK, err
    assert "sm-directory version 1 is served" in out
    assert "verification passed" in out and "diagnostics:" in out
    meta = httpx.get(f"{server.url}/v2/models/sm-directory").json()
    width = meta["inputs"][0]["shape"][1]
    data = json.dumps(np.random.default_rng(1).normal(size=(3, width)).tolist())
    code, out, err = foldserve(
        "compare", "sm-directory", "--data", data, "--reference", "source", url=server.url
    )
    assert code == cli.EXIT_OK, err
    assert "vs source" in out and "source" in out.split("median latency:")[1]
    assert httpx.delete(f"{server.url}/v1/models/sm-directory").status_code == 200


def test_upload_of_a_directory_that_is_no_saved_model_says_what_is_accepted(server, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = foldserve("upload", str(tmp_path), url=server.url)
    assert code == cli.EXIT_USAGE
    assert "without saved_model.pb" in err and ".onnx" in err and ".tar.gz" in err


def test_upload_help_lists_every_accepted_format():
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "upload", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(done.stdout.split())
    for fragment in (".keras", ".h5", ".onnx", ".zip", ".tar.gz", "SavedModel directory"):
        assert fragment in text
