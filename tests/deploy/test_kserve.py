"""The KServe manifests: typed by the KServe SDK (in a subprocess, see kserve_models.py)
and declaring the HTTP and gRPC V2 ports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
KSERVE = REPO / "deploy" / "kserve"


def load(name: str) -> dict:
    return yaml.safe_load((KSERVE / name).read_text())


def test_manifests_fit_the_sdk_models_and_the_check_refuses_misfits():
    result = subprocess.run(
        [sys.executable, "-m", "tests.deploy.kserve_models"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


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
