"""fp16 and int8 variants served as models of their own, ``<name>-<precision>``."""

import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.service.conftest import free_port, serving
from tests.trained import train_digits_conv


@pytest.fixture(scope="module")
def variant_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    digits = train_digits_conv(root / "trained")
    version = root / "models" / "conv" / "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "fold",
            str(digits.model_path),
            "-o",
            str(version),
            "--precision",
            "fp16,int8",
            "--calibration",
            str(digits.calibration),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    grpc_port = free_port()
    with serving(root / "models", {"FOLDSERVE_GRPC_PORT": str(grpc_port)}) as running:
        yield running, digits, grpc_port


def predict(url: str, name: str, images: np.ndarray) -> np.ndarray:
    reply = httpx.post(
        f"{url}/v1/models/{name}:predict", json={"instances": images.tolist()}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    return np.asarray(reply.json()["predictions"])


def test_variants_answer_with_the_accuracy_of_float32(variant_server):
    server, digits, _ = variant_server
    accuracy = {}
    for name in ("conv", "conv-fp16", "conv-int8"):
        logits = predict(server.url, name, digits.held_out)
        accuracy[name] = float(np.mean(logits.argmax(axis=1) == digits.labels))
    assert accuracy["conv"] > 0.95
    assert abs(accuracy["conv-fp16"] - accuracy["conv"]) <= 0.01, accuracy
    assert abs(accuracy["conv-int8"] - accuracy["conv"]) <= 0.01, accuracy


def test_variants_speak_every_protocol_and_share_the_versions(variant_server):
    server, digits, grpc_port = variant_server
    status = httpx.get(f"{server.url}/v1/models/conv-int8").json()
    assert [entry["version"] for entry in status["model_version_status"]] == ["1"]
    assert httpx.get(f"{server.url}/v2/models/conv-int8/versions/1/ready").status_code == 200
    rows = digits.held_out[:5]
    v2 = httpx.post(
        f"{server.url}/v2/models/conv-fp16/infer",
        json={
            "inputs": [
                {
                    "name": "pixels",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        },
    )
    assert v2.status_code == 200, v2.text
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    tensor = grpcclient.InferInput("pixels", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    answer = client.infer("conv-int8", [tensor])
    logits = answer.as_numpy(answer.get_response().outputs[0].name)
    assert logits.shape == (5, 10)
    assert (logits.argmax(axis=1) == predict(server.url, "conv", rows).argmax(axis=1)).mean() >= 0.8


def test_catalogue_downloads_and_delete_of_a_variant(variant_server):
    server, _, _ = variant_server
    catalogue = {
        entry["name"]: entry for entry in httpx.get(f"{server.url}/v1/models").json()["models"]
    }
    assert catalogue["conv-int8"]["variant_of"] == "conv"
    assert catalogue["conv-fp16"]["precision"] == "fp16"
    download = httpx.get(f"{server.url}/v1/models/conv/versions/1/model.int8.onnx")
    assert download.status_code == 200
    assert (
        download.content
        == httpx.get(f"{server.url}/v1/models/conv-int8/versions/1/model.onnx").content
    )
    assert (
        download.content != httpx.get(f"{server.url}/v1/models/conv/versions/1/model.onnx").content
    )
    missing = httpx.get(f"{server.url}/v1/models/conv/versions/1/model.int4.onnx")
    assert missing.status_code == 404 and "int4" in missing.json()["error"]
    refused = httpx.delete(f"{server.url}/v1/models/conv-int8")
    assert refused.status_code == 409
    assert "variant of model 'conv'" in refused.json()["error"]
    assert httpx.get(f"{server.url}/v1/models/conv-int8").status_code == 200


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("variant-uploads")
    digits = train_digits_conv(root / "trained")
    with serving(root / "models") as running:
        yield running, digits


def test_an_upload_with_precision_serves_each_passing_variant(upload_server):
    server, digits = upload_server
    reply = httpx.post(
        f"{server.url}/v1/models?wait=true",
        files={
            "file": ("conv.keras", digits.model_path.read_bytes()),
            "calibration": ("rows.npy", digits.calibration.read_bytes()),
        },
        data={"name": "uploaded", "precision": "int8,fp16"},
        timeout=600,
    )
    assert reply.status_code == 201, reply.text
    variants = {entry["precision"]: entry for entry in reply.json()["report"]["variants"]}
    assert variants["int8"]["passed"] and variants["fp16"]["passed"], variants
    assert variants["int8"]["rows_source"] == "calibration"
    version = server.models_dir / "uploaded" / "1"
    assert not [path.name for path in version.iterdir() if "calibration" in path.name]
    baseline = predict(server.url, "uploaded", digits.held_out).argmax(axis=1)
    for name in ("uploaded-int8", "uploaded-fp16"):
        answer = predict(server.url, name, digits.held_out).argmax(axis=1)
        assert abs(np.mean(answer == digits.labels) - np.mean(baseline == digits.labels)) <= 0.01
    job = httpx.get(f"{server.url}/v1/jobs").json()["jobs"][0]
    assert "quantizing" in job["timings"]


def test_the_client_uploads_with_precision_and_lists_the_variants(upload_server, tmp_path):
    server, digits = upload_server
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "upload",
            str(digits.model_path),
            "--name",
            "client-conv",
            "--precision",
            "int8",
            "--calibration",
            str(digits.calibration),
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "int8: passed" in result.stdout and "model.int8.onnx" in result.stdout
    assert httpx.get(f"{server.url}/v1/models/client-conv-int8").status_code == 200


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        ({"precision": "int4"}, {}, "unknown precision 'int4'"),
        ({}, {"calibration": ("rows.npy", b"")}, "send 'precision'"),
        ({"precision": "fp16", "equalize": "true"}, {}, "'equalize' applies to the int8"),
        ({"precision": "int8", "equalize": "maybe"}, {}, "'equalize' must be true or false"),
        ({"name": "mine-int8"}, {}, "kept for the variants"),
    ],
)
def test_upload_refusals_name_the_field(upload_server, data, files, message):
    server, digits = upload_server
    rows = digits.calibration.read_bytes()
    files = {key: (file_name, content or rows) for key, (file_name, content) in files.items()}
    reply = httpx.post(
        f"{server.url}/v1/models?wait=true",
        files={"file": ("conv.keras", digits.model_path.read_bytes()), **files},
        data={"name": "refused", **data},
        timeout=120,
    )
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


def test_compare_runs_the_variants_in_the_same_rounds(variant_server):
    server, digits, _ = variant_server
    reply = httpx.post(
        f"{server.url}/v1/models/conv:compare",
        json={"instances": digits.held_out[:16].tolist(), "variants": True, "repeats": 20},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert set(answer["latency_ms"]) == {"folded", "unfolded", "fp16", "int8"}
    assert answer["latency"]["repeats"] >= 20
    for precision in ("fp16", "int8"):
        speedup = answer["latency"][f"{precision}_speedup"]
        assert speedup["iqr"][0] <= speedup["median"] <= speedup["iqr"][1]
    [output] = answer["outputs"].values()
    assert output["int8"]["argmax_agreement"] >= 0.9
    assert output["fp16"]["max_rel_diff"] < 1e-2
    assert len(output["int8"]["outputs"]) == 16
    plain = httpx.post(
        f"{server.url}/v1/models/conv:compare", json={"instances": digits.held_out[:2].tolist()}
    ).json()
    assert set(plain["latency_ms"]) == {"folded", "unfolded"}
    wrong = httpx.post(
        f"{server.url}/v1/models/conv:compare",
        json={"instances": digits.held_out[:2].tolist(), "variants": "yes"},
    )
    assert wrong.status_code == 400 and "'variants'" in wrong.json()["error"]
