"""Hostile uploads built here, sent to a real server: the scans refuse what would read or
write the server's files (a SavedModel's hidden dataset graph, ONNX tensors kept in other
files) with a 4xx naming the culprit; nothing is read, written, stored or served."""

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import hostile_onnx
from tests import saved_models as build
from tests.service.conftest import serving
from tests.service.test_bad_input import assert_error, store_snapshot
from tests.service.test_saved_model_upload import send

SECRET = Path("/etc/passwd")


def secret_line() -> str:
    return SECRET.read_text().splitlines()[0]


@pytest.mark.parametrize("asserts", [False, True], ids=["writes", "asserts"])
def test_saved_model_hiding_a_dataset_is_refused_unrun(server, tmp_path, asserts):
    victim = tmp_path / "victim.txt"
    model = build.hides_a_dataset(tmp_path / "hider", SECRET, victim, asserts=asserts)
    before = store_snapshot(server)
    reply = send(server, "hider.zip", build.zipped(model), {"name": "hider"})
    assert_error(reply, 400, "dataset graph of node 'DatasetFromGraph'", "nothing in it was run")
    assert "op 'TextLineDataset'" in reply.text or "op 'WriteFile'" in reply.text
    assert secret_line() not in reply.text
    assert not victim.exists()
    assert store_snapshot(server) == before


def test_compare_against_a_stored_saved_model_rescans_it(server, tmp_path):
    """A stored SavedModel whose graph was swapped for a hostile one after its upload:
    ``:compare`` with the source as reference checks it again before running it."""
    good = build.tf_module_two_inputs(tmp_path / "good")
    reply = send(server, "good.zip", build.zipped(good), {"name": "rescanned"})
    assert reply.status_code == 201, reply.text
    version = reply.json()["version"]
    victim = tmp_path / "victim.txt"
    hider = build.hides_a_dataset(tmp_path / "hider", SECRET, victim)
    stored = server.models_dir / "rescanned" / str(version) / "saved_model"
    shutil.copy(hider / "saved_model.pb", stored / "saved_model.pb")

    feed = {"features": np.ones((2, 5)).tolist(), "offset": np.ones((2, 4)).tolist()}
    compared = httpx.post(
        f"{server.url}/v1/models/rescanned:compare",
        json={"inputs": feed, "reference": "source"},
        timeout=300,
    )
    assert 400 <= compared.status_code < 500, compared.text
    message = compared.json()["error"]
    assert "'TextLineDataset'" in message or "'WriteFile'" in message, message
    assert str(server.models_dir) not in message
    assert not victim.exists()


@pytest.mark.parametrize(
    ("where", "location"),
    [
        *[(where, "etc/passwd") for where in hostile_onnx.WHERE],
        ("constant", "../../other-model/report.json"),
        ("constant", "/etc/passwd"),
    ],
)
def test_onnx_upload_with_external_data_is_refused(server, tmp_path, where, location):
    path = hostile_onnx.save(hostile_onnx.hostile(where, location), tmp_path / "leak.onnx")
    before = store_snapshot(server)
    with open(path, "rb") as handle:
        reply = httpx.post(
            f"{server.url}/v1/models?wait=true",
            files={"file": ("leak.onnx", handle, "application/octet-stream")},
            data={"name": "leak"},
            timeout=300,
        )
    assert_error(reply, 400, "keeps its data in an external file", repr(location))
    assert "'c'" in reply.json()["error"] or "node 'leak'" in reply.json()["error"]
    assert store_snapshot(server) == before
    assert httpx.get(f"{server.url}/v1/models/leak").status_code == 404


def test_stored_model_with_external_data_is_never_served(server, tmp_path):
    """A model.onnx in the store whose Constant reads ``report.json`` beside it (as ONNX
    Runtime would, from a path): the version is not served and no byte of it leaks."""
    models = tmp_path / "models"
    version = models / "leak" / "1"
    shutil.copytree(server.models_dir / "digits" / "1", version)
    for extra in version.iterdir():
        if extra.suffix in (".keras", ".h5"):
            extra.unlink()
    hostile_onnx.save(hostile_onnx.hostile("constant", "report.json"), version / "model.onnx")
    shutil.copy(version / "model.onnx", version / "unfolded.onnx")
    leaked = np.frombuffer((version / "report.json").read_bytes()[:16], np.float32)
    with serving(models) as running:
        status = httpx.get(f"{running.url}/v1/models").json()
        reply = httpx.post(f"{running.url}/v1/models/leak:predict", json={"instances": [[0.0] * 4]})
        assert 400 <= reply.status_code < 600 and reply.status_code != 500, reply.text
        (entry,) = [model for model in status["models"] if model["name"] == "leak"]
        assert entry["versions"][0]["state"] == "UNAVAILABLE"
        assert "attribute 'value' of Constant node 'leak'" in entry["versions"][0]["reason"]
        assert str(leaked[0]) not in reply.text and str(models) not in str(status)
