"""The KServe manifests, read into the KServe SDK's typed models (and the Kubernetes
client's, for the pod fields): every key must be a field of its model, every value of
the field's type, and the models' own validation must accept them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import kserve.models
import kubernetes.client
import pytest
import yaml
from kserve.api_client import ApiClient

REPO = Path(__file__).resolve().parents[2]
KSERVE = REPO / "deploy" / "kserve"
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool}


def typed(data: Any, kind: str, where: str = "") -> Any:
    """``data`` as an instance of the SDK model named ``kind``, or an AssertionError
    naming the path of the first key or value that does not fit."""
    # KServe's models spell containers list[X] / dict(str, X), Kubernetes' List[X] / Dict[str, X]
    if kind.startswith(("list[", "List[")):
        assert isinstance(data, list), f"{where}: expected a list, got {data!r}"
        return [typed(item, kind[5:-1], f"{where}[{i}]") for i, item in enumerate(data)]
    if kind.startswith(("dict(", "Dict[")):
        value_kind = kind[5:-1].split(", ", 1)[1]
        assert isinstance(data, dict), f"{where}: expected a mapping, got {data!r}"
        return {key: typed(value, value_kind, f"{where}.{key}") for key, value in data.items()}
    if kind == "object":
        return data
    if kind == "datetime":
        assert isinstance(data, datetime.datetime), f"{where}: expected a time"
        return data
    if kind in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[kind]) and not (
            kind != "bool" and isinstance(data, bool)
        ), f"{where}: expected {kind}, got {data!r}"
        return data
    model = getattr(kserve.models, kind, None) or getattr(kubernetes.client.models, kind)
    assert isinstance(data, dict), f"{where}: {kind} must be a mapping"
    fields = {json_key: attr for attr, json_key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    assert not unknown, f"{where}: {kind} has no field {unknown[0]!r}"
    arguments = {
        fields[key]: typed(value, model.openapi_types[fields[key]], f"{where}.{key}")
        for key, value in data.items()
    }
    return model(**arguments)  # the model's setters check required fields and enums


def load(name: str) -> dict:
    return yaml.safe_load((KSERVE / name).read_text())


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("servingruntime.yaml", "V1alpha1ServingRuntime"),
        ("inferenceservice.yaml", "V1beta1InferenceService"),
    ],
)
def test_manifest_fits_the_sdk_models(name, kind):
    manifest = load(name)
    model = typed(manifest, kind, kind)
    back = ApiClient().sanitize_for_serialization(model)
    assert back == manifest


def test_the_typed_check_refuses_what_kserve_would():
    runtime = load("servingruntime.yaml")
    runtime["spec"]["containers"][0]["port"] = 8080  # "ports" misspelt
    with pytest.raises(AssertionError, match="V1Container has no field 'port'"):
        typed(runtime, "V1alpha1ServingRuntime", "runtime")
    service = load("inferenceservice.yaml")
    service["spec"]["predictor"]["minReplicas"] = "1"
    with pytest.raises(AssertionError, match="minReplicas: expected int"):
        typed(service, "V1beta1InferenceService", "service")


def test_runtime_and_service_declare_http_and_grpc_v2():
    runtime = load("servingruntime.yaml")["spec"]
    assert {"v2", "grpc-v2"} <= set(runtime["protocolVersions"])
    [container] = runtime["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http1": 8080, "h2c": 8081}
    env = {item["name"]: item["value"] for item in container["env"]}
    assert (env["FOLDSERVE_PORT"], env["FOLDSERVE_GRPC_PORT"]) == ("8080", "8081")
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    service = load("inferenceservice.yaml")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == load("servingruntime.yaml")["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert {port["containerPort"] for port in model["ports"]} == {8080, 8081}
    # Knative (serverless) mode routes one port per container: both need raw deployment.
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
        "RawDeployment"
    )
