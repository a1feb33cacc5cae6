"""Every Kubernetes manifest validates against the Kubernetes schemas, and its probes hit real app endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
CRDS = {"ServiceMonitor"}  # Prometheus Operator kinds are not in the core schemas


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(K8S)) for p in MANIFESTS])
def test_manifest_is_valid(path: Path) -> None:
    for doc in documents(path):
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["spec"]["endpoints"][0]["path"] == "/metrics"
            continue
        if "overlays" in path.parts:  # strategic-merge patches are partial objects: check their shape only
            assert doc["metadata"]["name"]
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kustomizations_list_files_that_exist() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (kustomization.parent / entry).exists(), (kustomization, entry)


def test_probes_and_security_of_the_deployment() -> None:
    from service.core.settings import Settings
    from service.protocols.ops import router

    paths = {route.path for route in router.routes}  # type: ignore[attr-defined]
    [deployment] = documents(K8S / "base" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"] and security["capabilities"]["drop"] == ["ALL"]
    config = yaml.safe_load((K8S / "base" / "configmap.yaml").read_text())["data"]
    assert set(config) <= {f"RM_{name.upper()}" for name in Settings.model_fields}  # no typos in RM_* names
    gpu_config = yaml.safe_load((K8S / "overlays" / "gpu" / "configmap-gpu.yaml").read_text())["data"]
    assert set(gpu_config) <= {f"RM_{name.upper()}" for name in Settings.model_fields}
    for overlay in ({}, gpu_config):
        assert_drain_keeps_its_promise(pod, container, config | overlay)


def assert_drain_keeps_its_promise(pod: dict[str, Any], container: dict[str, Any], config: dict[str, str]) -> None:
    """Every admitted request can be answered before the kubelet's SIGKILL: admission by expected wait <= drain,
    and preStop + shutdown delay + drain + the server's backstop <= the grace period."""
    from service.__main__ import BACKSTOP_SECONDS
    from service.core.settings import Settings

    settings = Settings(
        model_dir="/models/current", **{k[3:].lower(): v for k, v in config.items() if k != "RM_MODEL_DIR"}
    )
    assert 0 < settings.max_queue_seconds <= settings.drain_timeout
    before_sigterm = container["lifecycle"]["preStop"]["sleep"]["seconds"] + settings.shutdown_delay_seconds
    assert before_sigterm + settings.drain_timeout + BACKSTOP_SECONDS < pod["terminationGracePeriodSeconds"]
    gpu = yaml.safe_load((K8S / "overlays" / "gpu" / "deployment-gpu.yaml").read_text())
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
