"""The served OpenAPI document against the real server: every form field and value the
upload accepts is in it, and a real answer of every documented operation validates
against the schema the document gives for its status."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.service.conftest import DEMO_SOURCE, make_repository, serving

ROUTES = Path(__file__).resolve().parents[2] / "service" / "http_api" / "routes"


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A server of its own: the checks upload and delete a model."""
    with serving(make_repository(tmp_path_factory.mktemp("openapi"))) as running:
        yield running


@pytest.fixture(scope="module")
def document(own_server) -> dict[str, Any]:
    return httpx.get(f"{own_server.url}/openapi.json").json()


def upload_form(document: dict[str, Any]) -> dict[str, Any]:
    body = document["paths"]["/v1/models"]["post"]["requestBody"]
    return body["content"]["multipart/form-data"]["schema"]


def form_fields_read_by_the_upload_route() -> set[str]:
    """The names the upload route reads from the form: ``form.get("x")`` and
    ``_field(form, "x", ...)`` in routes/models.py."""
    tree = ast.parse((ROUTES / "models.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        is_get = isinstance(function, ast.Attribute) and function.attr == "get"
        is_get = is_get and isinstance(function.value, ast.Name) and function.value.id == "form"
        is_field = isinstance(function, ast.Name) and function.id == "_field"
        arguments = node.args[:1] if is_get else node.args[1:2] if is_field else []
        names |= {a.value for a in arguments if isinstance(a, ast.Constant)}
    return names


def test_the_upload_form_names_every_field_it_reads(document):
    fields = form_fields_read_by_the_upload_route()
    assert {"file", "name", "signature", "probe", "precision", "equalize"} <= fields
    assert fields == set(upload_form(document)["properties"])
    assert upload_form(document)["required"] == ["file"]


def post_upload(server, **fields: str) -> httpx.Response:
    files = {"file": ("model.keras", DEMO_SOURCE.read_bytes(), "application/octet-stream")}
    return httpx.post(f"{server.url}/v1/models", files=files, data=fields, timeout=60)


def test_every_equalize_value_documented_is_taken_and_no_other(own_server, document):
    values = upload_form(document)["properties"]["equalize"]["enum"]
    assert {"true", "false"} <= set(values)
    for value in values:
        # a true flag without precision=int8 is refused; a false one gets past that
        # check to the invalid name: either way no job is made
        reply = post_upload(own_server, equalize=value, name="Not A Name")
        error = reply.json()["error"]
        assert reply.status_code == 400
        assert ("'equalize' applies" in error) == (value in ("true", "1", "yes", "on")), error
        assert "must be true or false" not in error
    refused = post_upload(own_server, equalize="maybe")
    assert refused.status_code == 400
    assert refused.json()["error"] == "form field 'equalize' must be true or false"


def test_the_precision_pattern_names_the_precisions_the_server_knows(own_server, document):
    pattern = upload_form(document)["properties"]["precision"]["pattern"]
    reply = post_upload(own_server, precision="bf16")
    assert reply.status_code == 400
    listed = re.search(r"expected one of ([\w, ]+)", reply.json()["error"]).group(1)
    known = re.findall(r"\w+", listed)
    assert set(re.findall(r"\w+", pattern)) == set(known)
    for precision in known:
        assert re.fullmatch(pattern, precision)
    assert re.fullmatch(pattern, ",".join(known)) and not re.fullmatch(pattern, "bf16")


def test_the_compare_references_are_the_ones_the_server_takes(own_server, document):
    body = document["paths"]["/v1/models/{name}:compare"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    documented = set(schema["properties"]["reference"]["enum"])
    reply = httpx.post(
        f"{own_server.url}/v1/models/digits:compare",
        json={**schema["example"], "reference": "nope"},
        timeout=60,
    )
    assert reply.status_code == 400
    assert set(re.findall(r"'(\w+)'", reply.json()["error"])) - {"nope"} == documented


def test_every_reference_in_the_document_resolves(document):
    text = str(document)
    references = set(re.findall(r"#/components/schemas/(\w[\w.-]*)", text))
    assert references and references <= set(document["components"]["schemas"])
    assert "HTTPValidationError" not in text


def calls(document: dict[str, Any], job_id: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One real request for each documented operation: (method, path, url path, options)."""
    values = {"name": "digits", "version": "1", "job_id": job_id}
    values |= {"label": "stable", "precision": "fp16"}
    made = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            filled = dict(values)
            if method == "delete" and path.startswith("/v1/models/"):
                filled["name"] = "uploaded"
            options: dict[str, Any] = {}
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                options["json"] = content["application/json"]["schema"].get("example", {})
            if "multipart/form-data" in content:
                files = {"file": ("m.keras", DEMO_SOURCE.read_bytes(), "application/octet-stream")}
                options |= {"files": files, "data": {"name": "uploaded"}}
            made.append((method, path, path.format(**filled), options))
    return made


def test_a_real_answer_of_every_operation_validates(own_server, document):
    url = own_server.url
    queued = post_upload(own_server, name="uploaded")
    check(document, "/v1/models", "post", queued, status=202)
    job_id = queued.json()["id"]
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=300) as stream:
        stream.read()  # the stream ends once the job has finished
    assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["state"] == "done"
    answered: dict[str, set[int]] = {}
    for method, template, path, options in calls(document, job_id):
        if method == "post" and path == "/v1/models":
            path += "?wait=true"  # 201 with the version, once folded
        reply = httpx.request(method.upper(), url + path, timeout=300, **options)
        check(document, template, method, reply)
        answered.setdefault(f"{method} {template}", set()).add(reply.status_code)
    assert len(answered) == sum(len(methods) for methods in document["paths"].values())
    succeeded = {key for key, statuses in answered.items() if statuses & {200, 201}}
    assert len(succeeded) >= 30, sorted(set(answered) - succeeded)


def check(
    document: dict[str, Any], template: str, method: str, reply: httpx.Response, status=None
) -> None:
    """``reply`` has a documented status and media type, and its JSON the schema given."""
    where = (method, str(reply.url), reply.status_code, reply.text[:300])
    assert status is None or reply.status_code == status, where
    responses = document["paths"][template][method]["responses"]
    assert str(reply.status_code) in responses, where
    documented = responses[str(reply.status_code)].get("content", {})
    media_type = reply.headers["content-type"].split(";")[0]
    assert media_type in documented, (*where, media_type, list(documented))
    if media_type == "application/json":
        schema = {**documented[media_type]["schema"], "components": document["components"]}
        errors = [
            f"{error.instance_path}: {error.message}"
            for error in jsonschema_rs.validator_for(schema).iter_errors(reply.json())
        ]
        assert not errors, (*where, errors[:5])
