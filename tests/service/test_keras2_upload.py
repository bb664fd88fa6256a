"""A Keras 2 (tf_keras) .h5 file uploaded to a real server: folded, served, and
answering like tf_keras itself."""

import io

import httpx
import numpy as np

from tests import keras2_models as build


def test_keras2_h5_upload_serves_what_tf_keras_answers(server, tmp_path):
    model = build.randomise_batch_norms(build.resnet_like())
    path = build.save(model, tmp_path / "resnet_like.h5")
    files = {"file": (path.name, io.BytesIO(path.read_bytes()), "application/octet-stream")}
    reply = httpx.post(
        f"{server.url}/v1/models?wait=true", files=files, data={"name": "keras2"}, timeout=300
    )
    assert reply.status_code == 201, reply.text
    report = reply.json()["report"]
    assert "from a Keras 2" in report["loader"] and "renamed" in report["loader"]
    assert report["verification"]["passed"] and len(report["folded"]) == 3

    inputs, expected = build.answers(model, rows=4)
    predicted = httpx.post(
        f"{server.url}/v1/models/keras2:predict", json={"instances": inputs.tolist()}
    )
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_allclose(predicted.json()["predictions"], expected, rtol=1e-4, atol=1e-5)


def _upload(server, path):
    files = {"file": (path.name, io.BytesIO(path.read_bytes()), "application/octet-stream")}
    return httpx.post(f"{server.url}/v1/models?wait=true", files=files, timeout=300)


def test_keras2_library_lambdas_fold_and_other_code_is_refused_with_400(server, tmp_path):
    model = build.randomise_batch_norms(build.classifier_lambdas())
    path = build.library_lambdas(build.save(model, tmp_path / "seresnext.h5"))
    reply = _upload(server, path)
    assert reply.status_code == 201, reply.text
    report = reply.json()["report"]
    assert "Lambda layer of classification_models recognised" in report["loader"]
    assert report["verification"]["passed"]
    assert len(report["folded"]) + len(report["not_folded"]) == 2

    forged = build.library_lambdas(build.save(build.lambda_model(), tmp_path / "forged.h5"))
    reply = _upload(server, forged)
    assert reply.status_code == 400, reply.text
    assert "Lambda layer 'doubler'" in reply.json()["error"]


def test_keras1_file_upload_is_refused_with_400_saying_what_to_do(server, tmp_path):
    import h5py

    path = build.save(build.article_mlp(), tmp_path / "keras1.h5")
    with h5py.File(path, "r+") as handle:
        handle.attrs["keras_version"] = "1.2.2"
    reply = _upload(server, path)
    assert reply.status_code == 400, reply.text
    assert "was written by Keras 1.2.2" in reply.json()["error"]
