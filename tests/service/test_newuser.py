"""What a TF Serving / Triton / KServe user tries first, through their own clients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import kserve_v1, upload_file
from tests.service.conftest import DEMO_SOURCE, REPO, serving, serving_grpc
from tests.service.test_client import foldserve

ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}
ROW = [0.0] * 64


def test_kserve_v1_explain_is_a_400_naming_predict(server):
    done = kserve_v1(
        server,
        """
try:
    await client.explain(url, "digits", {"instances": [[0.0] * 64]})
except httpx.HTTPStatusError as error:
    print(json.dumps([error.response.status_code, error.response.json()]))
""",
    )
    assert done.returncode == 0, done.stderr
    status, body = json.loads(done.stdout)
    assert status == 400
    assert "explainer" in body["error"]
    assert "':predict'" in body["error"]
    unknown = httpx.post(f"{server.url}/v1/models/nope:explain", json={"instances": [ROW]})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/digits/labels/stable"),
        ("GET", "/v1/models/digits/labels/stable/metadata"),
        ("POST", "/v1/models/digits/labels/stable:predict"),
    ],
)
def test_tf_serving_version_label_is_a_400_saying_there_are_none(server, method, path):
    response = httpx.request(method, server.url + path, json={"instances": [ROW]})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "'stable'" in message
    assert "/versions/<n>" in message


def test_a_model_whose_only_version_failed_says_so_to_every_client(guarded_server):
    url = guarded_server.url
    with DEMO_SOURCE.open("rb") as file:
        upload = httpx.post(
            f"{url}/v1/models?wait=true",
            files={"file": ("model.keras", file)},
            data={"name": "never-folds"},
            headers=ADMIN,
            timeout=120,
        )
    assert upload.status_code == 422, upload.text
    try:
        triton = httpclient.InferenceServerClient(url.removeprefix("http://"))
        with pytest.raises(InferenceServerException) as raised:
            triton.get_model_metadata("never-folds", headers=READER)
        triton.close()
        assert raised.value.status() == "404"
        assert "version 1 failed to fold" in raised.value.message()
        assert "/v1/models/never-folds/versions/1/report" in raised.value.message()
        predict = httpx.post(
            f"{url}/v1/models/never-folds:predict", json={"instances": [ROW]}, headers=READER
        )
        assert predict.status_code == 404
        assert "failed to fold" in predict.json()["error"]
        report = httpx.get(f"{url}/v1/models/never-folds/versions/1/report", headers=READER)
        assert report.status_code == 200
        assert report.json()["failure"]["stage"] == "verifying"
    finally:
        httpx.delete(f"{url}/v1/models/never-folds", headers=ADMIN)
    gone = httpx.post(
        f"{url}/v1/models/never-folds:predict", json={"instances": [ROW]}, headers=READER
    )
    assert gone.status_code == 404
    assert gone.json()["error"] == "no model named 'never-folds'"


@pytest.mark.parametrize(
    "body",
    [{"instances": [{"b64": "AAAA"}]}, {"inputs": {"b64": "AAAA"}}],
    ids=["instances", "inputs"],
)
def test_tf_serving_b64_values_say_the_inputs_are_numeric(server, body):
    response = httpx.post(f"{server.url}/v1/models/digits:predict", json=body)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "binary string values" in message
    assert "'pixels' float32" in message


@pytest.fixture(scope="module")
def int8_variant(server, digits, tmp_path_factory):
    """The demo model uploaded with an int8 variant, as the client CLI does it."""
    rows = tmp_path_factory.mktemp("calibration") / "rows.npy"
    np.save(rows, digits.data[:64].astype("float32"))
    code, out, err = foldserve(
        "upload",
        str(DEMO_SOURCE),
        "--name",
        "newuser-digits",
        "--precision",
        "int8",
        "--calibration",
        str(rows),
        url=server.url,
    )
    assert code == 0, out + err
    assert "int8: passed" in out
    return "newuser-digits-int8"


def test_compare_of_an_int8_variant_judges_it_as_its_upload_did(server, digits, int8_variant):
    body = {"instances": digits.data[:8].tolist(), "return_outputs": False}
    answer = httpx.post(f"{server.url}/v1/models/{int8_variant}:compare", json=body).json()
    assert answer["verdict"]["rtol"] == 0.1
    assert answer["verdict"]["passed"] is True
    assert answer["verdict"]["compared"].startswith("folded int8 vs unfolded float32 ONNX")
    assert answer["outputs"]["probabilities"]["max_rel_diff"] > 1e-4  # it is int8
    base = httpx.post(f"{server.url}/v1/models/newuser-digits:compare", json=body).json()
    assert base["verdict"]["rtol"] == 1e-4


def test_compare_of_nan_rows_passes_when_both_models_give_nan(server, digits, tmp_path):
    rows = digits.data[:3].astype("float32")
    rows[0, 0] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, rows)
    code, out, err = foldserve("compare", "digits", "--file", str(path), "--json", url=server.url)
    assert code == 0, out + err
    answer = json.loads(out)
    assert answer["verdict"]["passed"] is True
    assert answer["outputs"]["probabilities"]["max_rel_diff"] < 1e-4


def test_a_failed_only_model_still_names_its_failure_after_a_restart(tmp_path):
    models = tmp_path / "models"
    strict = {"FOLDSERVE_FOLD_RTOL": "1e-15", "FOLDSERVE_FOLD_NOISE_FACTOR": "0"}
    with serving(models, strict) as running:
        upload = upload_file(running, DEMO_SOURCE, "never-folds", timeout=120)
        assert upload.status_code == 422, upload.text
    with serving_grpc(models, strict) as running:
        answer = httpx.get(f"{running.url}/v2/models/never-folds")
        triton = tritongrpc.InferenceServerClient(running.grpc_url)
        try:
            index = triton.get_model_repository_index().models
            with pytest.raises(InferenceServerException) as raised:
                triton.get_model_metadata("never-folds")
        finally:
            triton.close()
    assert answer.status_code == 404
    assert "version 1 failed to fold" in answer.json()["error"]
    assert "version 1 failed to fold" in raised.value.message()
    (entry,) = [model for model in index if model.name == "never-folds"]
    assert entry.state == "UNAVAILABLE"
    assert entry.reason.startswith("folding changed output 'probabilities'")


def test_triton_http_load_unload_and_extensions_say_why_not(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        for call, expected in [
            (lambda: client.load_model("digits"), "explicit model load / unload is not allowed"),
            (lambda: client.unload_model("digits"), "explicit model load / unload"),
            (client.get_log_settings, "log settings"),
            (client.get_trace_settings, "trace settings"),
            (client.get_system_shared_memory_status, "shared-memory"),
            (client.get_cuda_shared_memory_status, "shared-memory"),
        ]:
            with pytest.raises(InferenceServerException) as raised:
                call()
            assert raised.value.status() == "400"
            assert expected in raised.value.message()
        assert client.is_model_ready("digits")  # unload refused: still served
    finally:
        client.close()


def test_tf_serving_empty_signature_name_is_the_default(server):
    body = {"signature_name": "", "instances": [ROW]}
    response = httpx.post(f"{server.url}/v1/models/digits:predict", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]) == 10


def refused_class_count(triton, client, rows: np.ndarray):
    """Ask ``client`` (of ``triton``: tritonclient.http or .grpc) for the top 3 classes of
    ``rows``: the error that must raise, and the input, for a plain request after."""
    pixels = triton.InferInput("pixels", [1, 64], "FP32")
    pixels.set_data_from_numpy(rows)
    wanted = triton.InferRequestedOutput("probabilities", class_count=3)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("digits", [pixels], outputs=[wanted])
    return raised.value, pixels


def test_triton_class_count_is_refused_not_ignored(server, tmp_path):
    rows = np.zeros((1, 64), np.float32)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        raised, _ = refused_class_count(httpclient, client, rows)
    finally:
        client.close()
    assert raised.status() == "400"
    assert "classification extension (class_count 3)" in raised.message()
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    with serving_grpc(models) as running:
        triton = tritongrpc.InferenceServerClient(running.grpc_url)
        try:
            grpc_raised, pixels = refused_class_count(tritongrpc, triton, rows)
            plain = triton.infer("digits", [pixels]).as_numpy("probabilities")
        finally:
            triton.close()
    assert grpc_raised.status() == "StatusCode.INVALID_ARGUMENT"
    assert "class_count 3" in grpc_raised.message()
    assert plain.shape == (1, 10)


def test_client_output_into_a_closed_pipe_ends_quietly(server, digits, tmp_path):
    rows = tmp_path / "rows.npy"
    np.save(rows, digits.data[:200].astype("float32"))
    read_end, write_end = os.pipe()
    os.close(read_end)  # `foldserve predict ... | head -c 100` once head has left
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "predict", "digits", "--file", str(rows)],
            cwd=REPO,
            env={**os.environ, "FOLDSERVE_URL": server.url},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""


def test_a_model_still_folding_says_so_instead_of_no_model_named(server):
    upload = upload_file(server, DEMO_SOURCE, "newuser-folding", wait=False, timeout=60)
    assert upload.status_code == 202, upload.text
    job = upload.json()["id"]
    # a fold takes seconds (the worker loads Keras); this lookup comes right after the 202
    answer = httpx.get(f"{server.url}/v2/models/newuser-folding")
    assert answer.status_code == 404
    assert "version 1 is being folded" in answer.json()["error"]
    assert job in answer.json()["error"]
    code, out, err = foldserve("jobs", job, "--watch", url=server.url)
    assert code == 0, out + err
    assert httpx.get(f"{server.url}/v2/models/newuser-folding").status_code == 200
