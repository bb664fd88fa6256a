"""A server without TensorFlow (the serving-only image): serves, never folds.

TensorFlow is installed here, so the server process is started with it hidden the
way a missing package looks to Python (``sys.modules["tensorflow"] = None`` in a
``sitecustomize`` on PYTHONPATH): ``find_spec`` finds nothing, ``import`` fails.
"""

from __future__ import annotations

import os
import shutil

import httpx
import numpy as np
import pytest

from tests.helpers import refused_upload
from tests.service.conftest import DEMO_SOURCE, serving


@pytest.fixture(scope="module")
def serving_only(tmp_path_factory, server):
    root = tmp_path_factory.mktemp("serving-only")
    hide = root / "hide-tensorflow"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text('import sys\n\nsys.modules["tensorflow"] = None\n')
    models = root / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    (models / "pending" / "1").mkdir(parents=True)
    shutil.copy(DEMO_SOURCE, models / "pending" / "1" / "model.keras")
    path = os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")]))
    with serving(models, {"PYTHONPATH": path}) as running:
        yield running


def test_serves_folded_versions(serving_only, digits):
    rows = digits.data[:4].tolist()
    response = httpx.post(f"{serving_only.url}/v1/models/digits:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    assert np.asarray(response.json()["predictions"]).shape == (4, 10)


def test_leaves_unfolded_versions_to_a_folding_server(serving_only):
    listing = httpx.get(f"{serving_only.url}/v1/models").json()["models"]
    pending = next(model for model in listing if model["name"] == "pending")
    assert pending["versions"][0]["state"] != "AVAILABLE"
    assert sorted(p.name for p in (serving_only.models_dir / "pending" / "1").iterdir()) == [
        "model.keras"
    ]


def test_upload_and_keras_compare_are_refused_naming_where_folding_runs(serving_only, digits):
    error = refused_upload(serving_only, DEMO_SOURCE, wait=True)
    assert "without TensorFlow" in error
    assert "full foldserve image" in error
    assert "foldserve fold" in error

    compare = httpx.post(
        f"{serving_only.url}/v1/models/digits:compare",
        json={"instances": digits.data[:1].tolist(), "reference": "keras"},
    )
    assert compare.status_code == 409, compare.text
    assert "foldserve fold" in compare.json()["error"]
