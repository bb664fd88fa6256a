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
