"""The KServe manifests read into the KServe SDK's typed models (and the Kubernetes
client's, for the pod fields): every key must be a field of its model, every value of
the field's type, and the models' own validation must accept them.

Run as a script (``python -m tests.deploy.kserve_models``) by ``test_kserve.py``: the
SDK registers the ``inference.*`` protobuf messages that ``tritonclient.grpc``
registers too, so it must not be imported into the test process itself."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import kserve.models
import kubernetes.client
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


def refused(manifest: dict, kind: str, where: str, reason: str) -> None:
    """``manifest`` must fail the SDK's ``kind`` model, for ``reason``."""
    try:
        typed(manifest, kind, where)
    except AssertionError as error:
        assert reason in str(error), error
    else:
        raise AssertionError(f"{where} was accepted though {reason!r}")


def main() -> None:
    for name, kind in (
        ("servingruntime.yaml", "V1alpha1ServingRuntime"),
        ("inferenceservice.yaml", "V1beta1InferenceService"),
    ):
        manifest = load(name)
        model = typed(manifest, kind, kind)
        back = ApiClient().sanitize_for_serialization(model)
        assert back == manifest, f"{name} does not survive the SDK's models unchanged"
    runtime = load("servingruntime.yaml")
    runtime["spec"]["containers"][0]["port"] = 8080  # "ports" misspelt
    refused(runtime, "V1alpha1ServingRuntime", "runtime", "V1Container has no field 'port'")
    service = load("inferenceservice.yaml")
    service["spec"]["predictor"]["minReplicas"] = "1"
    refused(service, "V1beta1InferenceService", "service", "minReplicas: expected int")
    print("ok")


if __name__ == "__main__":
    main()
