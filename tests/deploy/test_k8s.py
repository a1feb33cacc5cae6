"""Every Kubernetes manifest validates against the Kubernetes schemas, and its probes hit real app endpoints."""

from __future__ import annotations

import tempfile
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


def patches() -> set[Path]:
    """Files that kustomizations apply as strategic-merge patches (partial objects)."""
    return {
        (k.parent / p["path"]).resolve()
        for k in K8S.rglob("kustomization.yaml")
        for p in yaml.safe_load(k.read_text()).get("patches", [])
    }


def merged(base: Any, patch: Any) -> Any:
    """A strategic merge as kustomize does it for these files: maps merge, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {k: merged(base[k], v) if k in base else v for k, v in patch.items()} | {
            k: v for k, v in base.items() if k not in patch
        }
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in patch):
        by_name = {x["name"]: x for x in patch}
        kept = [merged(x, by_name.pop(x["name"])) if x.get("name") in by_name else x for x in base]
        return kept + list(by_name.values())
    return patch


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(K8S)) for p in MANIFESTS])
def test_manifest_is_valid(path: Path) -> None:
    for doc in documents(path):
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["spec"]["endpoints"][0]["path"] == "/metrics"
            continue
        if path.resolve() in patches():  # a partial object: valid once merged into the base (below)
            assert doc["metadata"]["name"]
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("overlay", ["gpu", "verifiers"])
def test_each_overlay_gives_a_valid_deployment(overlay: str) -> None:
    [base] = documents(K8S / "base" / "deployment.yaml")
    [patch] = documents(K8S / "overlays" / overlay / f"deployment-{overlay}.yaml")
    kubernetes_validate.validate(merged(base, patch), kubernetes_validate.latest_version(), strict=True)


def test_the_verifier_overlay_serves_its_recipe_within_the_drain() -> None:
    """The recipe in the overlay loads, reaches the container where RM_REWARD_RECIPE says, and a request's verifier
    budget after admission still ends within the drain; the sandbox has what bubblewrap needs."""
    from service.core.components import specs
    from service.core.recipe import load_recipe
    from service.core.settings import Settings

    overlay = K8S / "overlays" / "verifiers"
    [recipe_map] = documents(overlay / "recipe.yaml")
    [config_patch] = documents(overlay / "configmap-verifiers.yaml")
    [base_config] = documents(K8S / "base" / "configmap.yaml")
    config = base_config["data"] | config_patch["data"]
    assert set(config) <= {f"RM_{name.upper()}" for name in Settings.model_fields}
    [base] = documents(K8S / "base" / "deployment.yaml")
    [patch] = documents(overlay / "deployment-verifiers.yaml")
    pod = merged(base, patch)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "recipe"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "recipe"]
    assert volume["configMap"]["name"] == recipe_map["metadata"]["name"]
    [(key, text)] = recipe_map["data"].items()
    assert config["RM_REWARD_RECIPE"] == f"{mount['mountPath']}/{key}"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / key).write_text(text)
        recipe = load_recipe(Path(folder) / key, specs())
    assert {c.kind for c in recipe.components} == {"model", "math", "code", "format"}
    settings = Settings(**{k[3:].lower(): v for k, v in config.items()})
    assert settings.max_queue_seconds + recipe.budget_seconds <= settings.drain_timeout
    assert pod["hostUsers"] is False and container["securityContext"]["procMount"] == "Unmasked"
    assert container["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert not container["securityContext"]["allowPrivilegeEscalation"]  # still no privilege, no capabilities
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert_drain_keeps_its_promise(pod, container, config)


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
