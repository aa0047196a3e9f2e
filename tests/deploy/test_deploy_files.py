"""deploy/ must be valid offline: Kubernetes schemas, the Compose spec and hadolint."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arbor_core.config import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` installs it")
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=DEPLOY)


def test_kubernetes_manifests_match_the_schemas() -> None:
    manifests = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml"))
    assert manifests
    result = _run([_tool("kubernetes-validate"), "--strict", "--quiet", *manifests])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validation_catches_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec: {replicas: many, selector: {}, template: {}}\n"
    )
    result = _run([_tool("kubernetes-validate"), "--strict", "--quiet", str(broken)])
    assert result.returncode != 0


def test_compose_file_matches_the_compose_spec() -> None:
    result = _run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    result = _run([_tool("hadolint"), "Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr


def _k8s_documents() -> list[dict]:
    docs: list[dict] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_container_command_is_a_module_of_this_checkout() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    modules = {svc["command"][0] for svc in compose["services"].values() if "command" in svc}
    modules.discard("-js")
    for doc in _k8s_documents():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        modules |= {c["args"][0] for c in pod.get("containers", [])}
    arbor_modules = {m for m in modules if m.startswith("arbor")}
    assert arbor_modules >= {"arbor_split", "arbor_registry", "arbor_training", "arbor_inference"}
    missing = [m for m in arbor_modules if importlib.util.find_spec(m) is None]
    assert not missing, f"deploy files start modules that do not exist: {missing}"


def test_kubernetes_probes_use_each_services_default_port() -> None:
    for doc in _k8s_documents():
        if doc["kind"] != "Deployment" or doc["metadata"]["name"] == "arbor-training-worker":
            continue
        service = doc["metadata"]["name"].removeprefix("arbor-")
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"]["port"] == DEFAULT_PORTS[service]
        assert container["livenessProbe"]["grpc"]["port"] == DEFAULT_PORTS[service]


def test_metrics_ports_are_exposed_and_scraped() -> None:
    """Each process's Prometheus endpoint (its default metrics port) is a container port with
    scrape annotations in Kubernetes, and published (or exposed) with labels in Compose."""
    from arbor_core.metrics import default_metrics_port

    components = {
        "arbor-split": "split",
        "arbor-training": "training",
        "arbor-registry": "registry",
        "arbor-inference": "inference",
        "arbor-training-worker": "training-worker",
    }
    seen = set()
    for doc in _k8s_documents():
        if doc["kind"] != "Deployment":
            continue
        name = doc["metadata"]["name"]
        port = default_metrics_port(components[name])
        template = doc["spec"]["template"]
        container = template["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": port} in container["ports"], name
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port), name
        seen.add(name)
    assert seen == set(components)
    for doc in _k8s_documents():
        if doc["kind"] == "Service" and doc["metadata"]["name"] in components:
            port = default_metrics_port(components[doc["metadata"]["name"]])
            metrics = {"name": "metrics", "port": port, "targetPort": "metrics"}
            assert metrics in doc["spec"]["ports"], doc["metadata"]["name"]

    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    in_compose = {name.removeprefix("arbor-"): c for name, c in components.items()}
    in_compose["worker"] = in_compose.pop("training-worker")
    for name, component in in_compose.items():
        port = str(default_metrics_port(component))
        service = services[name]
        published = [p.split(":")[-1] for p in service.get("ports", [])] + service.get("expose", [])
        assert port in published, name
        assert service["labels"]["prometheus.io/port"] == port, name


def test_the_page_token_key_comes_from_a_secret_every_service_reads() -> None:
    """Replicas must share ARBOR_PAGE_TOKEN_SECRET, or page tokens fail across them."""
    docs = _k8s_documents()
    secrets = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "arbor-secrets"
    ]
    assert "ARBOR_PAGE_TOKEN_SECRET" in secrets[0]["stringData"]
    for doc in docs:
        if doc["kind"] == "ConfigMap":  # not in plain config
            assert "ARBOR_PAGE_TOKEN_SECRET" not in doc["data"]
        if doc["kind"] == "Deployment":
            sources = doc["spec"]["template"]["spec"]["containers"][0]["envFrom"]
            assert {"secretRef": {"name": "arbor-secrets"}} in sources, doc["metadata"]["name"]
