"""Upload, fold, predict, compare, delete: the model store through HTTP."""

import threading
import time

import httpx
import numpy as np
import pytest

from tests.helpers import compared_output, wait_until
from tests.service.conftest import make_repository, serving


def upload(server, path, name=None, headers=None, timeout=300):
    with open(path, "rb") as handle:
        files = {"file": (path.name, handle, "application/octet-stream")}
        data = {"name": name} if name else {}
        return httpx.post(
            f"{server.url}/v1/models?wait=true",
            files=files,
            data=data,
            headers=headers,
            timeout=timeout,
        )


def test_upload_predict_compare_delete(server, trained_model_file, digits):
    first = upload(server, trained_model_file)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["name"] == "fresh-digits" and body["version"] == 1
    assert [entry["direction"] for entry in body["report"]["folded"]] == ["backward", "backward"]
    assert body["report"]["verification"]["passed"]

    second = upload(server, trained_model_file, name="fresh-digits")
    assert second.status_code == 201 and second.json()["version"] == 2
    listing = httpx.get(f"{server.url}/v1/models").json()["models"]
    entry = next(model for model in listing if model["name"] == "fresh-digits")
    assert [v["version"] for v in entry["versions"]] == [1, 2]

    rows = digits.data[:32].astype(np.float32)
    predicted = httpx.post(
        f"{server.url}/v1/models/fresh-digits:predict", json={"instances": rows.tolist()}
    ).json()["predictions"]
    v2_reply = httpx.post(
        f"{server.url}/v2/models/fresh-digits/versions/1/infer",
        json={
            "inputs": [
                {"name": "pixels", "shape": [32, 64], "datatype": "FP32", "data": rows.tolist()}
            ]
        },
    ).json()
    np.testing.assert_allclose(
        np.array(v2_reply["outputs"][0]["data"]).reshape(32, 10), predicted, rtol=1e-6
    )

    compared = httpx.post(
        f"{server.url}/v1/models/fresh-digits/versions/2:compare",
        json={"instances": rows.tolist(), "reference": "keras"},
        timeout=120,
    )
    assert compared.status_code == 200, compared.text
    result = compared.json()
    [output] = result["outputs"].values()
    assert np.array(output["folded"]).shape == (32, 10)
    assert output["max_abs_diff"] < 1e-5
    assert output["argmax_agreement"] == 1.0
    assert output["keras_max_abs_diff"] < 1e-5
    np.testing.assert_allclose(output["keras"], output["folded"], atol=1e-5)
    assert set(result["latency_ms"]) == {"folded", "unfolded", "keras"}

    assert httpx.delete(f"{server.url}/v1/models/fresh-digits/versions/1").status_code == 200
    gone = httpx.post(
        f"{server.url}/v1/models/fresh-digits/versions/1:predict", json={"instances": [[0] * 64]}
    )
    assert gone.status_code == 404 and "no version 1" in gone.json()["error"]
    assert (
        httpx.get(f"{server.url}/v1/models/fresh-digits").json()["model_version_status"][0][
            "version"
        ]
        == "2"
    )
    assert httpx.delete(f"{server.url}/v1/models/fresh-digits").json()["deleted_versions"] == [2]
    assert httpx.get(f"{server.url}/v1/models/fresh-digits").status_code == 404
    assert not (server.models_dir / "fresh-digits").exists()


def test_compare_without_keras_reference(server, digits):
    reply = httpx.post(
        f"{server.url}/v1/models/digits:compare", json={"inputs": digits.data[:4].tolist()}
    ).json()
    output = reply["outputs"]["probabilities"]
    assert {"folded", "unfolded", "max_abs_diff", "max_rel_diff", "argmax_agreement"} <= set(output)
    assert "keras" not in output
    assert output["max_rel_diff"] < 1e-4


def test_predictions_keep_succeeding_while_a_model_folds(server, trained_model_file, digits):
    result = {}

    def do_upload():
        result["reply"] = upload(server, trained_model_file, name="busy")

    uploader = threading.Thread(target=do_upload)
    uploader.start()
    answered, failures = 0, []
    rows = {"instances": digits.data[:8].tolist()}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        deadline = time.monotonic() + 120
        while uploader.is_alive() and time.monotonic() < deadline:
            reply = client.post("/v1/models/digits:predict", json=rows)
            answered += 1
            if reply.status_code != 200:
                failures.append(reply.status_code)
    uploader.join()
    assert result["reply"].status_code == 201
    assert failures == []
    assert answered > 20
    httpx.delete(f"{server.url}/v1/models/busy")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    with serving(make_repository(tmp_path_factory.mktemp("workers")), workers=2) as running:
        yield running


def test_two_workers_see_one_upload(two_workers, trained_model_file):
    reply = upload(two_workers, trained_model_file, name="shared")
    assert reply.status_code == 201, reply.text

    def predict_on_new_connections(count: int) -> list[int]:
        statuses = []
        for _ in range(count):  # a new connection each time, so both workers answer some
            with httpx.Client(base_url=two_workers.url) as client:
                statuses.append(
                    client.post(
                        "/v1/models/shared:predict", json={"instances": [[1.0] * 64]}
                    ).status_code
                )
        return statuses

    # the worker that did not take the upload sees the version at its next poll
    deadline = time.monotonic() + 30
    while predict_on_new_connections(10) != [200] * 10 and time.monotonic() < deadline:
        pass
    assert predict_on_new_connections(30) == [200] * 30


def test_multi_input_multi_output_model(server, tmp_path):
    from tests import zoo

    path = tmp_path / "branches.keras"
    zoo.randomize_batch_norms(zoo.multi_io_branches(), seed=8).save(path)
    reply = upload(server, path)
    assert reply.status_code == 201, reply.text
    assert len(reply.json()["report"]["folded"]) == 3
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=(3, 10)), rng.normal(size=(3, 7))

    rows = httpx.post(
        f"{server.url}/v1/models/branches:predict",
        json={
            "instances": [
                {"left": a, "right": b} for a, b in zip(left.tolist(), right.tolist(), strict=True)
            ]
        },
    )
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == 3 and set(predictions[0]) == {"classes", "score_bn", "trunk"}

    columns = httpx.post(
        f"{server.url}/v1/models/branches:predict",
        json={"inputs": {"left": left.tolist(), "right": right.tolist()}},
    ).json()["outputs"]
    np.testing.assert_allclose(columns["classes"], [p["classes"] for p in predictions], rtol=1e-6)

    v2_reply = httpx.post(
        f"{server.url}/v2/models/branches/infer",
        json={
            "inputs": [
                {
                    "name": "left",
                    "shape": [3, 10],
                    "datatype": "FP32",
                    "data": left.reshape(-1).tolist(),
                },
                {
                    "name": "right",
                    "shape": [3, 7],
                    "datatype": "FP32",
                    "data": right.reshape(-1).tolist(),
                },
            ],
            "outputs": [{"name": "trunk"}],
        },
    ).json()
    [trunk] = v2_reply["outputs"]
    assert trunk["name"] == "trunk" and trunk["shape"] == [3, 8]
    np.testing.assert_allclose(np.array(trunk["data"]).reshape(3, 8), columns["trunk"], rtol=1e-6)

    missing = httpx.post(
        f"{server.url}/v1/models/branches:predict", json={"instances": left.tolist()}
    )
    assert missing.status_code == 400 and "2 inputs" in missing.json()["error"]
    compared = httpx.post(
        f"{server.url}/v1/models/branches:compare",
        json={"inputs": {"left": left.tolist(), "right": right.tolist()}, "reference": "keras"},
        timeout=120,
    ).json()
    assert set(compared["outputs"]) == {"classes", "score_bn", "trunk"}
    assert all(entry["keras_max_rel_diff"] < 1e-4 for entry in compared["outputs"].values())
    httpx.delete(f"{server.url}/v1/models/branches")


def test_a_crash_mid_upload_leaves_no_half_model(tmp_path, trained_model_file):
    import signal
    import subprocess

    models = make_repository(tmp_path)
    with serving(models) as first:
        outcome = {}

        def doomed_upload():
            try:
                outcome["reply"] = upload(first, trained_model_file, "crashed")
            except httpx.TransportError as error:
                outcome["error"] = error

        uploader = threading.Thread(target=doomed_upload)
        uploader.start()
        staging = models / ".staging"
        wait_until(lambda: any(staging.iterdir()), 30, interval=0.02, message="upload staged")
        assert any(staging.iterdir()), "the upload never reached the store"
        subprocess.run(["pkill", "-KILL", "-P", str(first.process.pid)], check=False)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        uploader.join()
    assert "error" in outcome, outcome  # the server died before answering
    assert not (models / "crashed").exists()
    with serving(models) as second:
        listed = {
            m["name"]: m["versions"] for m in httpx.get(f"{second.url}/v1/models").json()["models"]
        }
        # nothing stored; the interrupted upload job is listed as the version's failure
        assert listed["crashed"] == [
            {"version": 1, "state": "UNAVAILABLE", "reason": "interrupted"}
        ]
        assert not (models / "crashed").exists()
        status = httpx.get(f"{second.url}/v1/models/crashed").json()["model_version_status"]
        assert status[0]["state"] == "END"
        assert status[0]["status"]["error_message"] == "interrupted"
        refused = httpx.post(
            f"{second.url}/v1/models/crashed:predict", json={"instances": [[0.0] * 64]}
        )
        assert refused.status_code == 404 and "'crashed'" in refused.json()["error"]
        jobs = httpx.get(f"{second.url}/v1/jobs").json()["jobs"]
        assert [(job["name"], job["state"], job["error"]) for job in jobs] == [
            ("crashed", "failed", "interrupted")
        ]


def test_dynamic_image_size_model(server, tmp_path):
    import keras

    from tests import zoo

    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(image))
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D(name="pooled")(x))
    path = tmp_path / "anysize.keras"
    zoo.randomize_batch_norms(model, seed=2).save(path)
    assert upload(server, path).status_code == 201
    url = f"{server.url}/v1/models/anysize:predict"
    rng = np.random.default_rng(1)
    for size in (5, 9):
        reply = httpx.post(url, json={"instances": rng.normal(size=(2, size, size, 3)).tolist()})
        assert reply.status_code == 200 and np.array(reply.json()["predictions"]).shape == (2, 4)
    too_small = httpx.post(url, json={"instances": np.zeros((1, 1, 1, 3)).tolist()})
    assert too_small.status_code == 400
    assert "model 'anysize' version 1 rejected these inputs" in too_small.json()["error"]
    httpx.delete(f"{server.url}/v1/models/anysize")


def test_upload_with_probe_data_verifies_on_it(server, trained_model_file, digits, tmp_path):
    """The multipart 'probe' field: verification runs on the user's rows, and says so."""
    probe = tmp_path / "rows.npy"
    np.save(probe, digits.data[:20].astype(np.float32))
    with open(trained_model_file, "rb") as model, open(probe, "rb") as data:
        files = {
            "file": (trained_model_file.name, model, "application/octet-stream"),
            "probe": ("rows.npy", data, "application/octet-stream"),
        }
        reply = httpx.post(
            f"{server.url}/v1/models?wait=true", files=files, data={"name": "probed"}, timeout=300
        )
    assert reply.status_code == 201, reply.text
    verification = reply.json()["report"]["verification"]
    assert verification["probes"] == "user-supplied"
    assert verification["samples"] == 20
    assert verification["verdict"] == "passed"
    (check,) = verification["outputs"]
    assert {"fold_error", "export_error", "total_error"} <= check.keys()
    assert httpx.delete(f"{server.url}/v1/models/probed").status_code == 200


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (("rows.txt", b"1,2,3"), "not a .npy or .npz"),
        (("rows.npy", b"not an array"), "not a readable .npy/.npz"),
    ],
)
def test_upload_with_bad_probe_data_is_refused(server, trained_model_file, payload, fragment):
    with open(trained_model_file, "rb") as model:
        files = {
            "file": (trained_model_file.name, model, "application/octet-stream"),
            "probe": (payload[0], payload[1], "application/octet-stream"),
        }
        reply = httpx.post(
            f"{server.url}/v1/models?wait=true", files=files, data={"name": "badprobe"}, timeout=300
        )
    assert reply.status_code == 400, reply.text
    assert fragment in reply.json()["error"]
    assert httpx.get(f"{server.url}/v1/models/badprobe").status_code == 404


def test_compare_reports_interleaved_medians_and_a_verdict(server, digits):
    rows = digits.data[:8].tolist()
    reply = httpx.post(
        f"{server.url}/v1/models/digits:compare",
        json={"instances": rows, "repeats": 7, "return_outputs": False},
    )
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["verdict"]["passed"] is True
    assert result["verdict"]["rtol"] == 1e-4
    assert result["latency"]["repeats"] >= 7  # at least: small models run for a stable median
    assert result["latency_ms"]["folded"] > 0 and result["latency_ms"]["unfolded"] > 0
    output = result["outputs"]["probabilities"]
    assert "folded" not in output and "unfolded" not in output
    assert output["passed"] is True and output["max_rel_diff"] < 1e-4
    for bad, fragment in (
        ({"repeats": 0}, "'repeats'"),
        ({"return_outputs": "no"}, "true or false"),
    ):
        reply = httpx.post(
            f"{server.url}/v1/models/digits:compare", json={"instances": rows, **bad}
        )
        assert reply.status_code == 400 and fragment in reply.json()["error"]


def test_unfolded_sessions_keep_their_batch_norms(server, tmp_path):
    """The server runs unfolded.onnx with ONNX Runtime's BN fusions off: the session's
    optimised graph still holds every BatchNormalization, the folded one none."""
    import onnx
    import onnxruntime

    from folding.verify.fusions import UNFOLDED_DISABLED_OPTIMIZERS

    version = server.models_dir / "digits" / "1"
    counts = {}
    for file, disabled in (("unfolded.onnx", UNFOLDED_DISABLED_OPTIMIZERS), ("model.onnx", ())):
        options = onnxruntime.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / file)
        onnxruntime.InferenceSession(
            str(version / file),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(disabled),
        )
        graph = onnx.load(tmp_path / file).graph
        counts[file] = sum(node.op_type == "BatchNormalization" for node in graph.node)
    assert counts == {"unfolded.onnx": 2, "model.onnx": 0}


def test_upload_without_a_name_never_adds_to_an_existing_model(server, trained_model_file):
    first = upload(server, trained_model_file)
    assert first.status_code == 201, first.text
    name = first.json()["name"]
    again = upload(server, trained_model_file)
    assert again.status_code == 400 and f"name={name}" in again.json()["error"]
    versions = httpx.get(f"{server.url}/v1/models/{name}").json()["model_version_status"]
    assert [v["version"] for v in versions] == ["1"]
    assert httpx.delete(f"{server.url}/v1/models/{name}").status_code == 200


def test_onnx_upload_is_folded_on_its_graph(server, tmp_path):
    """An ONNX file (as PyTorch exports them: Conv -> BatchNormalization) is folded,
    verified with ONNX Runtime and served."""
    from tests.folding.test_onnx_fold import conv_then_bn

    source = tmp_path / "convnet.onnx"
    source.write_bytes(conv_then_bn(group=2).SerializeToString())
    reply = upload(server, source, name="convnet")
    assert reply.status_code == 201, reply.text
    report = reply.json()["report"]
    assert report["exporter"] == "onnx" and report["verification"]["verdict"] == "passed"
    assert [entry["into_class"] for entry in report["folded"]] == ["Conv"]
    rows = np.random.default_rng(0).normal(size=(2, 4, 5, 5)).tolist()
    predicted = httpx.post(f"{server.url}/v1/models/convnet:predict", json={"inputs": rows})
    assert predicted.status_code == 200, predicted.text
    compared = httpx.post(f"{server.url}/v1/models/convnet:compare", json={"inputs": rows})
    assert compared.status_code == 200 and compared.json()["verdict"]["passed"]
    # the source is the uploaded ONNX file itself, run as it came
    entry = compared_output(server, "convnet", {"inputs": rows, "reference": "source"})
    np.testing.assert_allclose(entry["source"], entry["unfolded"], rtol=1e-5, atol=1e-6)
    assert entry["source_max_rel_diff"] < 1e-4
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    refused = upload(server, broken, name="broken")
    assert refused.status_code == 400 and "not a valid ONNX model" in refused.json()["error"]
    assert httpx.delete(f"{server.url}/v1/models/convnet").status_code == 200


def test_optional_fields_left_empty_are_absent(server, trained_model_file):
    """What a browser form or Swagger UI sends for optional inputs left empty: an empty
    string, or a file part with no name and no bytes."""
    with open(trained_model_file, "rb") as handle:
        reply = httpx.post(
            f"{server.url}/v1/models?wait=true",
            files={
                "file": (trained_model_file.name, handle, "application/octet-stream"),
                "probe": ("", b"", "application/octet-stream"),
            },
            data={"name": "empty-fields", "calibration": "", "signature": ""},
            timeout=300,
        )
    assert reply.status_code == 201, reply.text
    assert reply.json()["report"]["verification"]["passed"]
    httpx.delete(f"{server.url}/v1/models/empty-fields")
