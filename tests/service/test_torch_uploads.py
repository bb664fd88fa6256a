"""ONNX files written by PyTorch's exporters (tests/data/torch) uploaded to a real
server: each folded with every BatchNormalization gone, served, and answering as
the original file does in ONNX Runtime."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.folding.test_torch_onnx import FILES, answers, batch_norms, rows_for
from tests.service.test_store import upload

DEFAULT = {"conv_bn_relu_ts13", "linear_bn1d_ts17", "residual_dynamo18"}
"""One file per exporter in the default run (each architecture is folded through the
CLI in tests/folding/test_torch_onnx.py); every file in the slow tier."""


@pytest.mark.parametrize(
    "path",
    [
        path if path.stem in DEFAULT else pytest.param(path, marks=pytest.mark.slow)
        for path in FILES
    ],
    ids=[path.stem for path in FILES],
)
def test_an_upload_folds_every_bn_of_a_torch_export(server, path):
    name = f"torch-{path.stem.replace('_', '-')}"
    reply = upload(server, path, name)
    assert reply.status_code == 201, (path.name, reply.text)
    report = reply.json()["report"]
    assert report["exporter"] == "onnx" and report["verification"]["passed"], path.name
    assert len(report["folded"]) == batch_norms(path) and report["not_folded"] == []
    base = f"{server.url}/v1/models/{name}"
    folded = httpx.get(f"{base}/versions/latest/model.onnx", timeout=60)
    assert folded.status_code == 200
    rows = rows_for(path)
    expected = answers(path, rows)
    np.testing.assert_allclose(answers(folded.content, rows), expected, rtol=1e-4, atol=1e-5)
    predicted = httpx.post(f"{base}:predict", json={"inputs": rows.tolist()}, timeout=60)
    assert predicted.status_code == 200, predicted.text
    served = np.asarray(predicted.json()["outputs"], np.float32)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    assert httpx.delete(base).status_code == 200
