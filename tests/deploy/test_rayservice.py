"""The KubeRay RayService manifest: its Serve config names our application builder with
arguments that are foldserve settings, Ray's own schema accepts it, and every pod mounts
the model repository where the replicas look for it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from service.engines import ray as ray_app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kubernetes" / "rayservice.yaml"
RAY_PYTHON = REPO / ".venv-ray" / "bin" / "python"


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def serve_config(rayservice) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def test_is_a_rayservice(rayservice):
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    assert rayservice["metadata"]["name"]


def test_serve_config_names_the_application_builder_with_valid_settings(serve_config):
    [application] = serve_config["applications"]
    module, _, attribute = application["import_path"].partition(":")
    assert (module, attribute) == ("service.engines.ray", "build")
    assert callable(getattr(ray_app, attribute))
    args = application["args"]
    assert set(args) <= set(Settings.model_fields), set(args) - set(Settings.model_fields)
    settings = Settings(**args)
    assert settings.min_replicas <= settings.replicas <= settings.max_replicas
    assert "autoscaling_config" in ray_app.deployment_options(settings)


def test_ray_version_is_in_the_pinned_range(rayservice):
    extra = re.search(r"^ray = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    [pin] = [Requirement(spec) for spec in re.findall(r'"([^"]+)"', extra.group(1))]
    version = rayservice["spec"]["rayClusterConfig"]["rayVersion"]
    assert pin.specifier.contains(version), (version, str(pin.specifier))


def test_every_pod_mounts_the_model_repository_at_models_dir(rayservice, serve_config):
    models_dir = serve_config["applications"][0]["args"]["models_dir"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    for template in templates:
        volumes = {volume["name"]: volume for volume in template["spec"]["volumes"]}
        for container in template["spec"]["containers"]:
            [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == models_dir]
            claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim == "foldserve-models"


def test_ray_accepts_the_serve_config(serve_config):
    """Ray Serve's own config schema, run in the Ray venv (``make ray-venv``)."""
    if not RAY_PYTHON.exists():
        pytest.skip(f"no Ray venv at {RAY_PYTHON}: run 'make ray-venv'")
    check = (
        "import json, sys\n"
        "from ray.serve.schema import ServeDeploySchema\n"
        "schema = ServeDeploySchema.parse_obj(json.load(sys.stdin))\n"
        "print(schema.applications[0].import_path)\n"
    )
    result = subprocess.run(
        [str(RAY_PYTHON), "-c", check],
        input=json.dumps(serve_config),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "service.engines.ray:build"
