"""Autoscaling on the wait a new request would face, in every variant (CPU and GPU, HPA through prometheus-adapter
and KEDA), and the custom resources checked for real against their CRDs' schemas."""

from __future__ import annotations

import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml
from images import ROOT
from manifests import K8S, build, documents, merged, validate_custom

WAIT = "rm_expected_wait_seconds"
# The Prometheus scaler's metadata keys, from KEDA's pkg/scalers/prometheus_scaler.go (the commit the vendored schema
# comes from): a misspelt key is ignored by KEDA, silently.
KEDA_PROMETHEUS_KEYS = {
    "serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace", "customHeaders",
    "ignoreNullValues", "unsafeSsl", "awsRegion", "timeout", "identityOwner",
}  # fmt: skip
VARIANTS = {"base": False, "overlays/gpu": True, "overlays/keda": False, "overlays/gpu-keda": True}  # name: on GPU


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_scales_on_the_expected_wait(variant: str) -> None:
    """One autoscaler per variant (two would fight), on the wait a new request would face, with a target below the
    admission limit (replicas come before 429s); CPU utilisation only as a second metric on CPU, none on GPU; KEDA's
    own admission checks; prometheus-adapter serves the metric the HPA asks for."""
    gpu = VARIANTS[variant]
    objects = build(K8S / variant)
    config = next(d for d in objects if d["kind"] == "ConfigMap")["data"]
    deployment = next(d for d in objects if d["kind"] == "Deployment")
    [scaler] = [d for d in objects if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    spec = scaler["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    if scaler["kind"] == "HorizontalPodAutoscaler":
        kubernetes_validate.validate(scaler, kubernetes_validate.latest_version(), strict=True)
        by_type = {m["type"]: m for m in spec["metrics"]}
        assert set(by_type) == ({"Pods"} if gpu else {"Pods", "Resource"})
        pods = by_type["Pods"]["pods"]
        assert pods["metric"] == {"name": WAIT} and pods["target"]["type"] == "AverageValue"
        target = float(pods["target"]["averageValue"])
        cpu = by_type.get("Resource", {}).get("resource")
        adapter = yaml.safe_load((ROOT / "deploy" / "prometheus" / "adapter-values.yaml").read_text())
        [rule] = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == WAIT]
        assert rule["seriesQuery"].startswith(WAIT + "{") and set(rule["resources"]["overrides"]) == {
            "namespace",
            "pod",
        }
    else:
        validate_custom(scaler)
        triggers = {t["type"]: t for t in spec["triggers"]}
        assert set(triggers) == ({"prometheus"} if gpu else {"prometheus", "cpu"})
        metadata = triggers["prometheus"]["metadata"]
        assert {"serverAddress", "query", "threshold"} <= set(metadata) <= KEDA_PROMETHEUS_KEYS
        # AverageValue (KEDA's default) divides the query's value by the replicas: the query sums over the pods.
        assert triggers["prometheus"].get("metricType", "AverageValue") == "AverageValue"
        assert metadata["query"].startswith("sum(") and WAIT in metadata["query"]
        target = float(metadata["threshold"])
        cpu = triggers.get("cpu")
        if cpu is not None:
            assert cpu["metricType"] == "Utilization" and set(cpu["metadata"]) == {"value"}
            cpu = {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": int(cpu["metadata"]["value"])},
            }
        # KEDA's admission webhook: replica bounds in order, and a fallback needs a trigger that is not CPU or memory.
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert "fallback" not in spec or any(t not in ("cpu", "memory") for t in triggers)
    assert 0 < target < float(config["RM_MAX_QUEUE_SECONDS"])
    assert cpu is None if gpu else cpu == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: the emulated builds stand alone")
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_emulated_builds_are_what_kustomize_builds(variant: str) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    ours = build(K8S / variant)
    theirs = [d for d in yaml.safe_load_all(built) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in theirs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in ours
    )
    scaler = [d["spec"] for d in theirs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    assert scaler == [d["spec"] for d in ours if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]


def test_custom_resources_are_checked_for_real() -> None:
    """The vendored schemas catch what the API server would refuse: a misspelt field, a number where KEDA wants a
    string, a rule without its expression."""
    [scaled] = documents(K8S / "overlays" / "keda" / "scaledobject.yaml")
    [rule] = documents(K8S / "base" / "prometheusrule.yaml")
    [monitor] = documents(K8S / "base" / "servicemonitor.yaml")
    broken = [
        merged(scaled, {"spec": {"minReplicas": 2}}),  # HPA's spelling, not KEDA's
        merged(scaled, {"spec": {"triggers": [{**scaled["spec"]["triggers"][0], "metadata": {"threshold": 5}}]}}),
        merged(rule, {"spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}}),
        merged(monitor, {"spec": {"endpoints": [{"port": "http", "interval": "fast"}]}}),
    ]
    for doc in broken:
        with pytest.raises(jsonschema.ValidationError):
            validate_custom(doc)
