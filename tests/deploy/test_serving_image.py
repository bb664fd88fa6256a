"""The serving-only image: no TensorFlow in what it installs, used by the replicas profile."""

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[2]
FOLDING_ONLY = {"tensorflow", "keras", "tf2onnx"}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", requirement)[0].lower() for requirement in requirements}


def test_serve_install_has_no_tensorflow_and_fold_extra_has_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    serving = requirement_names(project["dependencies"] + extras["serve"])
    assert not serving & FOLDING_ONLY
    assert {"onnxruntime", "onnxruntime-gpu", "fastapi", "grpcio"} <= serving
    assert requirement_names(extras["fold"]) == FOLDING_ONLY
    assert "foldserve[fold]" in extras["test"]
    makefile = (REPO / "Makefile").read_text()
    assert "-e '.[fold,test]'" in makefile


def test_dockerfile_chooses_extras_by_build_arg():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG FOLDSERVE_EXTRAS=fold" in text
    assert 'pip install --no-cache-dir ".[${FOLDSERVE_EXTRAS}]"' in text
    assert "EXPOSE 8080 8081" in text


def test_replicas_profile_puts_serving_image_behind_the_full_one():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    folding, serving = services["replica-a"], services["replica-b"]
    assert "FOLDSERVE_EXTRAS" not in (folding.get("build", {}).get("args") or {})
    assert serving["build"]["args"]["FOLDSERVE_EXTRAS"] == "serve"
    assert serving["image"] != folding["image"]
    assert serving["volumes"] == folding["volumes"] == ["models:/models"]
    proxy = services["proxy"]["environment"]
    assert proxy["FOLD_UPSTREAM"] == "replica-a:8080"
    assert "replica-b:8080" in proxy["UPSTREAMS"].split()
    smoke = yaml.safe_load((REPO / "deploy" / "compose.smoke.yml").read_text())["services"]
    assert smoke["proxy"]["environment"]["FOLD_UPSTREAM"] == "127.0.0.1:18081"
    grpc_ports = {
        smoke[name]["environment"]["FOLDSERVE_GRPC_PORT"] for name in ("replica-a", "replica-b")
    }
    assert len(grpc_ports) == 2


def test_proxy_routes_uploads_to_the_folding_replica():
    entrypoint = (REPO / "deploy" / "proxy" / "entrypoint.sh").read_text()
    assert "location = /v1/models" in entrypoint
    assert "proxy_pass http://foldserve_fold;" in entrypoint


def test_smoke_script_covers_both_images():
    script = (REPO / "scripts" / "container-smoke.sh").read_text()
    assert "--build-arg FOLDSERVE_EXTRAS=serve" in script
    assert '"$serving_bytes" -lt 500000000' in script
    assert '[ "$status" = 409 ]' in script
