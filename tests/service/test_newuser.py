"""What a TF Serving / Triton / KServe user tries first, through their own clients."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from kserve import InferenceRESTClient, RESTConfig
from tritonclient.utils import InferenceServerException

from tests.service.conftest import DEMO_SOURCE, serving
from tests.service.test_client import foldserve

ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}
ROW = [0.0] * 64


def test_kserve_v1_explain_is_a_400_naming_predict(server):
    async def explain() -> httpx.Response:
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        try:
            await client.explain(server.url, "digits", {"instances": [ROW]})
        except httpx.HTTPStatusError as error:
            return error.response
        finally:
            await client.close()
        raise AssertionError(":explain answered 2xx")

    response = asyncio.run(explain())
    assert response.status_code == 400
    assert "explainer" in response.json()["error"]
    assert "':predict'" in response.json()["error"]
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
    with serving(models, strict) as running, DEMO_SOURCE.open("rb") as file:
        upload = httpx.post(
            f"{running.url}/v1/models?wait=true",
            files={"file": ("model.keras", file)},
            data={"name": "never-folds"},
            timeout=120,
        )
        assert upload.status_code == 422, upload.text
    with serving(models, strict) as running:
        answer = httpx.get(f"{running.url}/v2/models/never-folds")
    assert answer.status_code == 404
    assert "version 1 failed to fold" in answer.json()["error"]
