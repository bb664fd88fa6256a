"""Schemathesis against the server's own OpenAPI document, bodies included: whatever it
generates, the server never answers 5xx, and every error is ``{"error": "..."}``.

Bounded: a fixed number of examples per operation (``FUZZ_EXAMPLES``), no shrinking,
on 127.0.0.1 only; destructive operations run against a throw-away repository.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.service.conftest import serving

FUZZ_EXAMPLES = int(os.environ.get("FOLDSERVE_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzzed_server(server, tmp_path_factory):
    models = tmp_path_factory.mktemp("fuzz") / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    with serving(models, {"FOLDSERVE_MAX_UPLOAD_BYTES": str(256 * 1024)}) as running:
        yield running


def test_openapi_document_is_truthful(fuzzed_server):
    document = httpx.get(f"{fuzzed_server.url}/openapi.json").json()
    assert "HTTPValidationError" not in str(document)
    operations = {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    for key in [
        ("post", "/v1/models/{name}:predict"),
        ("post", "/v2/models/{name}/infer"),
        ("post", "/v1/models/{name}:compare"),
        ("post", "/v1/models"),
    ]:
        assert "requestBody" in operations[key], key
    upload = operations[("post", "/v1/models")]["requestBody"]["content"]
    assert set(upload["multipart/form-data"]["schema"]["properties"]) >= {"file", "name", "probe"}
    for operation in operations.values():
        assert {"400", "404"} <= set(operation["responses"])
    docs = httpx.get(f"{fuzzed_server.url}/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert httpx.get(f"{fuzzed_server.url}/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_no_server_errors_under_fuzzing(fuzzed_server):
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    calls = sum(fuzz(operation, fuzzed_server.url, failures) for operation in operations)
    assert calls >= 5 * len(operations)  # the fuzzing really sent requests
    assert not failures, "\n".join(failures[:20])
    assert httpx.get(f"{fuzzed_server.url}/v2/health/ready").status_code == 200


def fuzz(operation, url: str, failures: list[str]) -> int:
    """Send up to ``FUZZ_EXAMPLES`` generated requests to one operation; record any 5xx;
    return how many were sent."""
    sent = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def run(case):
        response = case.call(base_url=url, timeout=60)
        sent.append(response.status_code)
        if response.status_code >= 500:
            failures.append(
                f"{operation.method.upper()} {operation.path} -> {response.status_code}: "
                f"{response.text[:200]} (body {str(case.body)[:200]})"
            )
        elif response.status_code >= 400 and "json" in str(response.headers):
            assert "error" in response.json(), response.text

    run()
    return len(sent)
