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
    from service.routes import router
    from service.settings import Settings

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
    drain = float(config["RM_DRAIN_SECONDS"]) + container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain
    assert set(config) <= {f"RM_{name.upper()}" for name in Settings.model_fields}  # no typos in RM_* names
    gpu = yaml.safe_load((K8S / "overlays" / "gpu" / "deployment-gpu.yaml").read_text())
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
