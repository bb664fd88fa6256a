"""Bad input gets a 4xx with {"error": ...} naming the problem; nothing is stored."""

import gzip
import shutil
import zipfile

import httpx
import keras
import numpy as np
import pytest

from tests.service.conftest import serving
from tests.service.test_store import upload


def store_snapshot(server):
    listing = httpx.get(f"{server.url}/v1/models").json()
    files = sorted(
        str(p.relative_to(server.models_dir))
        for p in server.models_dir.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(server.models_dir).parts)
    )
    return listing, files


def assert_error(reply, status, *fragments):
    assert reply.status_code == status, reply.text
    message = reply.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


PREDICT = "/v1/models/digits:predict"
INFER = "/v2/models/digits/infer"


@pytest.mark.parametrize(
    ("path", "body", "fragments"),
    [
        (PREDICT, {"instances": [[1.0] * 63]}, ["input 'pixels' has shape [1, 63]", "[-1, 64]"]),
        (PREDICT, {"instances": [1.0, 2.0]}, ["has shape [2]"]),
        (PREDICT, {"instances": [["a"] * 64]}, ["non-numeric"]),
        (PREDICT, {"instances": [[1.0] * 64, [1.0] * 3]}, ["ragged"]),
        (PREDICT, {"instances": []}, ["empty"]),
        (PREDICT, {"inputs": {"pixels": []}}, ["shape [0]"]),
        (PREDICT, {"inputs": {"pictures": [[0] * 64]}}, ["unknown input 'pictures'"]),
        (PREDICT, {"nothing": 1}, ["'instances'", "'inputs'"]),
        (PREDICT, {"instances": [[0] * 64], "signature_name": "other"}, ["signature_name"]),
        (PREDICT, [1, 2], ["JSON object"]),
        (
            INFER,
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}
                ]
            },
            ["datatype FP64", "FP32"],
        ),
        (
            INFER,
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 60}
                ]
            },
            ["60 values"],
        ),
        (
            INFER,
            {"inputs": [{"name": "pixels", "shape": [0, 64], "datatype": "FP32", "data": []}]},
            ["empty batch"],
        ),
        (
            INFER,
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "BYTES", "data": ["x"] * 64}
                ]
            },
            ["BYTES"],
        ),
        (
            INFER,
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
                ],
                "outputs": [{"name": "logits"}],
            },
            ["unknown output 'logits'"],
        ),
        (INFER, {"inputs": []}, ["non-empty list"]),
        (
            INFER,
            {
                "inputs": [
                    {"name": "pixels", "shape": "1x64", "datatype": "FP32", "data": [0.0] * 64}
                ]
            },
            ["shape"],
        ),
    ],
)
def test_bad_tensors(server, path, body, fragments):
    assert_error(httpx.post(server.url + path, json=body), 400, *fragments)


def test_malformed_json(server):
    reply = httpx.post(server.url + PREDICT, content=b'{"instances": [[1, 2}')
    assert_error(reply, 400, "not valid JSON")
    reply = httpx.post(server.url + INFER, content=b"")
    assert_error(reply, 400, "empty")


def test_binary_size_beyond_body(server):
    header = (
        b'{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":256}}]}'
    )
    reply = httpx.post(
        server.url + INFER,
        content=header + b"\0" * 10,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert_error(reply, 400, "binary_data_size 256")
    reply = httpx.post(
        server.url + INFER, content=gzip.compress(b"{}")[:5], headers={"Content-Encoding": "gzip"}
    )
    assert_error(reply, 400, "gzip")


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("POST", "/v1/models/nope:predict", 404, "no model named 'nope'"),
        ("POST", "/v1/models/digits/versions/9:predict", 404, "no version 9"),
        ("POST", "/v1/models/digits/versions/x1:predict", 400, "invalid model version"),
        ("GET", "/v2/models/nope", 404, "no model named 'nope'"),
        ("GET", "/v2/models/digits/versions/3/ready", 404, "no version 3"),
        ("POST", "/v2/models/nope/infer", 404, "nope"),
        ("DELETE", "/v1/models/nope", 404, "nope"),
        ("DELETE", "/v1/models/..%2F..%2Fetc", 404, "Not Found"),
        ("DELETE", "/v1/models/.staging", 400, "invalid model name"),
        ("GET", "/v1/nothing/here", 404, "Not Found"),
        ("PUT", "/v2/health/live", 405, "Method Not Allowed"),
    ],
)
def test_unknown_models_and_routes(server, method, path, status, fragment):
    assert_error(httpx.request(method, server.url + path, json={}), status, fragment)


def lambda_model(path):
    inputs = keras.Input((64,))
    outputs = keras.layers.Lambda(lambda x: x + 1, name="plus_one")(inputs)
    keras.Model(inputs, outputs).save(path)
    return path


def corrupt_archive(path, source):
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w") as broken:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename.endswith(".h5"):
                data = data[: len(data) // 3]
            broken.writestr(item, data)
    return path


def test_bad_uploads_change_nothing(server, tmp_path, trained_model_file):
    before = store_snapshot(server)
    cases = []
    (tmp_path / "notes.txt").write_text("hello")
    cases.append((tmp_path / "notes.txt", None, "not a model file"))
    (tmp_path / "random.keras").write_bytes(np.random.default_rng(0).bytes(5000))
    cases.append((tmp_path / "random.keras", None, "not a valid .keras archive"))
    cases.append((corrupt_archive(tmp_path / "cut.keras", trained_model_file), None, "cut.keras"))
    cases.append((lambda_model(tmp_path / "sneaky.keras"), None, "Lambda layer 'plus_one'"))
    cases.append((lambda_model(tmp_path / "sneaky.h5"), None, "Lambda layer 'plus_one'"))
    cases.append((trained_model_file, "../escape", "invalid model name"))
    cases.append((trained_model_file, "UPPER", "invalid model name"))
    for path, name, fragment in cases:
        assert_error(upload(server, path, name=name), 400, fragment)
    assert store_snapshot(server) == before
    assert list((server.models_dir / ".staging").iterdir()) == []
    assert not (server.models_dir.parent / "escape").exists()


def test_malformed_multipart(server):
    reply = httpx.post(
        f"{server.url}/v1/models",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert reply.status_code == 400
    assert "error" in reply.json()
    reply = httpx.post(f"{server.url}/v1/models", json={"file": "model.keras"})
    assert_error(reply, 400, "multipart/form-data")
    reply = httpx.post(f"{server.url}/v1/models", data={"name": "x"}, files={"other": b"1"})
    assert_error(reply, 400, "'file' field")


ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}


def test_tokens_guard_upload_delete_and_prediction(guarded_server, trained_model_file):
    url = guarded_server.url
    assert_error(upload(guarded_server, trained_model_file), 401, "admin token")
    assert_error(upload(guarded_server, trained_model_file, headers=READER), 401, "admin token")
    assert_error(httpx.delete(f"{url}/v1/models/digits"), 401, "admin token")
    body = {"instances": [[0.0] * 64]}
    assert_error(httpx.post(f"{url}{PREDICT}", json=body), 401, "api token")
    assert_error(
        httpx.post(f"{url}{PREDICT}", json=body, headers={"Authorization": "Bearer wrong"}),
        401,
        "api token",
    )
    assert httpx.post(f"{url}{PREDICT}", json=body, headers=READER).status_code == 200
    assert httpx.post(f"{url}{PREDICT}", json=body, headers=ADMIN).status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_verification_failure_is_refused_with_its_report(guarded_server, trained_model_file):
    before = store_snapshot(guarded_server)
    reply = upload(guarded_server, trained_model_file, headers=ADMIN)
    assert_error(reply, 422, "folding changed output 'probabilities'", "rtol 1e-15")
    report = reply.json()["report"]
    assert report["verification"]["passed"] is False
    assert report["verification"]["failure"] == "fold"
    (check,) = report["verification"]["outputs"]
    # folding is what missed the tolerance; the export itself was within its own
    assert check["fold_error"] > 1e-15 and check["export_error"] <= check["export_limit"]
    assert len(report["folded"]) == 2
    assert store_snapshot(guarded_server)[1] == before[1]  # nothing stored
    listing = httpx.get(f"{guarded_server.url}/v1/models", headers=READER).json()
    # the version the upload was given is listed with the reason it failed, until deleted
    (fresh,) = [model for model in listing["models"] if model["name"] == "fresh-digits"]
    (failed,) = fresh["versions"]
    assert failed["state"] == "UNAVAILABLE" and "folding changed output" in failed["reason"]
    # its report page says where and why the fold failed, with what was measured
    base = f"{guarded_server.url}/v1/models/fresh-digits/versions"
    page = httpx.get(f"{base}/{failed['version']}/report", headers=READER)
    assert page.status_code == 200, page.text
    document = page.json()
    assert document["failed"] is True and document["version"] == failed["version"]
    assert document["failure"]["stage"] == "verifying"
    assert document["failure"]["status_code"] == 422
    assert "folding changed output" in document["failure"]["error"]
    assert {"loading", "folding"} <= set(document["failure"]["timings"])
    assert document["report"]["verification"]["failure"] == "fold"
    assert httpx.get(f"{base}/latest/report", headers=READER).json()["failed"] is True
    missing = httpx.get(f"{base}/{failed['version'] + 1}/report", headers=READER)
    assert missing.status_code == 404
    reply = httpx.delete(f"{guarded_server.url}/v1/models/fresh-digits", headers=ADMIN)
    assert reply.json()["deleted_versions"] == [failed["version"]]
    assert httpx.get(f"{base}/{failed['version']}/report", headers=READER).status_code == 404
    assert store_snapshot(guarded_server) == before


def test_size_limits(guarded_server, tmp_path):
    big = {"instances": [[0.0] * 64] * 100}
    assert_error(httpx.post(guarded_server.url + PREDICT, json=big, headers=READER), 413, "limit")
    huge = tmp_path / "huge.keras"
    huge.write_bytes(b"\0" * (3 * 1024 * 1024))
    assert_error(upload(guarded_server, huge, headers=ADMIN), 413, "limit")

    def chunks():
        yield b'{"instances": ['
        for _ in range(200):
            yield b"[" + b"0.0," * 63 + b"0.0],"
        yield b"[0]]}"

    streamed = httpx.post(guarded_server.url + PREDICT, content=chunks(), headers=READER)
    assert_error(streamed, 413, "limit")
    bomb = gzip.compress(b" " * 1_000_000)
    reply = httpx.post(
        guarded_server.url + "/v2/models/digits/infer",
        content=bomb,
        headers={**READER, "Content-Encoding": "gzip"},
    )
    assert_error(reply, 413, "decompressed")


def random_json(rng, depth=0):
    """Random JSON: numbers, strings, nulls, and nested lists and objects with protocol keys."""
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice([0, 1.5, -1e308, 3, "x", None, True, {}, [], "", 2**70, 0.1])
    if roll < 0.6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        "instances",
        "inputs",
        "name",
        "shape",
        "datatype",
        "data",
        "parameters",
        "outputs",
        "pixels",
        "binary_data_size",
        "reference",
        "signature_name",
        "id",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_random_bodies_never_cause_a_server_error(server):
    import json
    import random

    rng = random.Random(7)
    paths = [PREDICT, INFER, "/v1/models/digits:compare", "/v2/models/digits/versions/1/infer"]
    with httpx.Client(base_url=server.url) as client:
        for _ in range(400):
            body = random_json(rng)
            if rng.random() < 0.4:
                body = {
                    "inputs": [
                        {
                            "name": "pixels",
                            "shape": random_json(rng, 2),
                            "datatype": rng.choice(["FP32", "FP64", "INT8", "BYTES", 1]),
                            "data": random_json(rng, 1),
                            "parameters": {"binary_data_size": random_json(rng, 3)},
                        }
                    ],
                    "outputs": random_json(rng, 2),
                }
            content = json.dumps(body).encode()
            headers = {}
            if rng.random() < 0.2:
                headers["Inference-Header-Content-Length"] = str(rng.randint(-5, len(content)))
                content += bytes(rng.randint(0, 300))
            reply = client.post(rng.choice(paths), content=content, headers=headers)
            assert reply.status_code < 500, (body, reply.text)
            if reply.status_code >= 400:
                assert reply.json()["error"]


def test_api_token_alone_also_guards_writes(server, tmp_path, trained_model_file):
    """With only the API token set, an anonymous upload or delete is refused (no bypass)."""
    models = tmp_path / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    with serving(models, {"FOLDSERVE_API_TOKEN": "reader-secret"}) as guarded:
        before = sorted(p.name for p in (models / "digits").iterdir())
        assert_error(upload(guarded, trained_model_file, name="digits"), 401, "token")
        assert_error(httpx.delete(f"{guarded.url}/v1/models/digits"), 401, "token")
        assert_error(httpx.delete(f"{guarded.url}/v1/models/digits/versions/1"), 401, "token")
        assert sorted(p.name for p in (models / "digits").iterdir()) == before
        reply = httpx.delete(f"{guarded.url}/v1/models/digits/versions/1", headers=READER)
        assert reply.status_code == 200, reply.text


def test_delete_latest_removes_only_the_highest_version(server, tmp_path):
    models = tmp_path / "models"
    for version in ("1", "2", "3"):
        shutil.copytree(server.models_dir / "digits" / "1", models / "digits" / version)
    with serving(models) as running:
        reply = httpx.delete(f"{running.url}/v1/models/digits/versions/latest")
        assert reply.status_code == 200, reply.text
        assert reply.json()["deleted_versions"] == [3]
        assert sorted(p.name for p in (models / "digits").iterdir()) == ["1", "2"]
        for odd in ("²", "0", "-1", "9" * 40):
            assert_error(
                httpx.delete(f"{running.url}/v1/models/digits/versions/{odd}"), 400, "version"
            )
        assert sorted(p.name for p in (models / "digits").iterdir()) == ["1", "2"]
