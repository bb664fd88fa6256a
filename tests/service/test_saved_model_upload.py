"""SavedModels uploaded as .zip / .tar.gz to a real server, answers checked against the
SavedModel's own serving function; unsafe graphs and archives refused with a 4xx."""

import io
import stat
import tarfile
import zipfile

import httpx
import numpy as np
import pytest

from tests import saved_models as build


def send(server, file_name, data, fields=None):
    files = {"file": (file_name, io.BytesIO(data), "application/octet-stream")}
    return httpx.post(
        f"{server.url}/v1/models?wait=true", files=files, data=fields or {}, timeout=300
    )


@pytest.mark.parametrize(
    ("which", "pack", "file_name"),
    [
        ("keras3_conv", lambda d: build.zipped(d), "k3conv.zip"),
        ("tf_keras_two_inputs", lambda d: build.tarred(d, "exported"), "tk2.tar.gz"),
        ("tf_module_two_inputs", lambda d: build.zipped(d, "exported"), "mod2.zip"),
    ],
)
def test_saved_model_upload_serves_what_the_signature_answers(
    server, saved_models, which, pack, file_name
):
    directory = saved_models[which]
    reply = send(server, file_name, pack(directory), {"name": f"sm-{which.replace('_', '-')}"})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    report = body["report"]
    assert report["verification"]["passed"] and report["folded"]
    assert report["exporter"] == "tf2onnx"

    name = body["name"]
    meta = httpx.get(f"{server.url}/v2/models/{name}").json()
    rng = np.random.default_rng(3)
    feed = {
        item["name"]: rng.standard_normal([4, *item["shape"][1:]]).astype(np.float32)
        for item in meta["inputs"]
    }
    expected = build.signature_answers(directory, feed)
    predicted = httpx.post(
        f"{server.url}/v1/models/{name}:predict",
        json={"inputs": {key: value.tolist() for key, value in feed.items()}},
    )
    assert predicted.status_code == 200, predicted.text
    outputs = predicted.json()["outputs"]
    if not isinstance(outputs, dict):
        outputs = {next(iter(expected)): outputs}
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, rtol=1e-4, atol=1e-5)

    compared = httpx.post(
        f"{server.url}/v1/models/{name}:compare",
        json={"inputs": {k: v.tolist() for k, v in feed.items()}, "reference": "source"},
        timeout=300,
    )
    assert compared.status_code == 200, compared.text
    for key, entry in compared.json()["outputs"].items():
        np.testing.assert_allclose(entry["source"], expected[key], rtol=1e-6, atol=1e-6)
        assert entry["source_max_rel_diff"] < 1e-4


def test_upload_of_a_saved_model_that_writes_a_file_is_refused_unrun(server, tmp_path):
    victim = tmp_path / "written.txt"
    model = build.writes_a_file(tmp_path / "writer", victim)
    reply = send(server, "writer.zip", build.zipped(model), {"name": "writer"})
    assert reply.status_code == 400, reply.text
    assert "'WriteFile'" in reply.json()["error"]
    assert not victim.exists()
    assert httpx.get(f"{server.url}/v1/models/writer").status_code == 404


def test_unknown_signature_is_a_400_naming_it(server, saved_models):
    data = build.zipped(saved_models["keras3_dense"])
    reply = send(server, "dense.zip", data, {"name": "dense-sig", "signature": "other"})
    assert reply.status_code == 400, reply.text
    assert "no signature 'other'" in reply.json()["error"]


def _zip_with(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, payload in entries:
            archive.writestr(info, payload)
    return buffer.getvalue()


def _symlink_zip():
    info = zipfile.ZipInfo("model/saved_model.pb")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _zip_with([(info, "/etc/passwd")])


def _tar_with(member, payload=b""):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(member, io.BytesIO(payload) if payload else None)
    return buffer.getvalue()


def _tar_member(name, kind=tarfile.REGTYPE, size=0, link=""):
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname = kind, size, link
    return member


@pytest.mark.parametrize(
    ("file_name", "data", "message"),
    [
        ("slip.zip", _zip_with([("../outside/saved_model.pb", "x")]), "outside the archive"),
        ("abs.zip", _zip_with([("/etc/saved_model.pb", "x")]), "absolute path"),
        ("link.zip", _symlink_zip(), "symbolic link"),
        ("link.tar.gz", _tar_with(_tar_member("m/x", tarfile.SYMTYPE, link="/")), "symbolic"),
        ("hard.tar.gz", _tar_with(_tar_member("m/x", tarfile.LNKTYPE, link="m/y")), "hard link"),
        ("dev.tar.gz", _tar_with(_tar_member("m/x", tarfile.CHRTYPE)), "device"),
        ("slip.tar.gz", _tar_with(_tar_member("../x", size=1), b"x"), "outside the archive"),
        ("empty.zip", _zip_with([("readme.txt", "x")]), "holds no SavedModel"),
        ("junk.tar.gz", b"not a tarball", "not a readable .tar.gz"),
        (
            "pax.tar.gz",
            _tar_with(_tar_member("m/PaxHeader", tarfile.XHDTYPE, size=2**21), b"0" * 2**21),
            "extended tar header",
        ),
    ],
)
def test_unsafe_or_broken_archives_are_refused(server, file_name, data, message):
    reply = send(server, file_name, data, {"name": "archive-check"})
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]
    assert httpx.get(f"{server.url}/v1/models/archive-check").status_code == 404
