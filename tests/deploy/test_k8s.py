"""Every Kubernetes manifest validates against the Kubernetes schemas, and its probes hit real app endpoints; the
annotation app's manifests (k8s/collect) keep every secret in a Secret, and its container runs here as started there."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from images import ROOT, image_tag, read_only_folder, running, stage, wait_healthy
from manifests import CRDS, K8S, documents, merged, patches, validate_custom

COLLECT = K8S / "collect"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(K8S)) for p in MANIFESTS])
def test_manifest_is_valid(path: Path) -> None:
    for doc in documents(path):
        if path.resolve() in patches():  # a partial object: valid once merged into the base (below)
            assert doc["metadata"]["name"]
            continue
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            validate_custom(doc)
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


def collect_resources() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind that `kubectl apply -k k8s/collect` applies."""
    spec = yaml.safe_load((COLLECT / "kustomization.yaml").read_text())
    found = [d for entry in spec["resources"] for d in documents(COLLECT / entry)]
    assert len({d["kind"] for d in found}) == len(found)
    return {d["kind"]: d for d in found}


def collect_container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_collect_keeps_its_secrets_in_a_secret() -> None:
    """The database URL and the admin token reach the container only from the Secret (never a literal value or an
    argument, which anyone who can read the pod sees); the Secret itself is only an example, not applied."""
    resources = collect_resources()
    kustomized = set(yaml.safe_load((COLLECT / "kustomization.yaml").read_text())["resources"])
    for path in COLLECT.glob("*.yaml"):
        assert path.name in kustomized | {"kustomization.yaml"} or path.name.endswith(".example.yaml"), path
    assert "Secret" not in resources
    [example] = documents(COLLECT / "secret.example.yaml")
    assert example["kind"] == "Secret" and all("CHANGE-ME" in value for value in example["stringData"].values())
    container = collect_container(resources["Deployment"])
    from_secret = {}
    for var in container["env"]:
        if not re.search(r"TOKEN|KEY|PASSWORD|SECRET|DATABASE|URL", var["name"]):
            continue  # a plain setting (FORWARDED_ALLOW_IPS, say) may be a literal
        assert "value" not in var, var
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == example["metadata"]["name"] and not ref.get("optional"), var  # no Secret: no start
        from_secret[var["name"]] = ref["key"]
    assert set(from_secret) >= {"COLLECT_DATABASE_URL", "COLLECT_ADMIN_TOKEN"}
    assert set(from_secret.values()) == set(example["stringData"])  # the example shows exactly the keys read
    assert "envFrom" not in container
    secret_flags = {"--db", "--admin-token", "--admin-token-file", "--reward-api-key"}
    assert not secret_flags & {a.partition("=")[0] for a in container["args"]}
    # No committed manifest anywhere holds a credential: database URLs carry placeholder passwords only.
    for path in K8S.rglob("*.yaml"):
        for password in re.findall(r"postgres(?:ql)?://[^:/@\s]+:([^@\s]+)@", path.read_text()):
            assert password in {"CHANGE-ME", "PASSWORD"}, path


def test_collect_deployment_service_and_image_agree() -> None:
    resources = collect_resources()
    deployment, service, guidelines = resources["Deployment"], resources["Service"], resources["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = collect_container(deployment)
    # The image: the collect target, its own entrypoint (python -m collect) running `serve` on the exposed port.
    assert container["image"] == image_tag("collect") and "command" not in container
    assert container["args"][0] == "serve" and flag(container["args"], "--host") == "0.0.0.0"
    image = stage("collect")
    [port] = container["ports"]
    assert str(port["containerPort"]) == flag(container["args"], "--port") == image.args("EXPOSE")[0]
    assert f":{port['containerPort']}/healthz" in " ".join(image.health_command())
    assert str(pod["securityContext"]["runAsUser"]) == image.args("USER")[0].split(":")[0]
    # Probes on the app's /healthz, through the container's named port.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # The Service and the Deployment's selector pick these pods, on that port.
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    [ingress] = documents(COLLECT / "ingress.example.yaml")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    # Hardened: non-root, read-only root filesystem with a writable /tmp, no capabilities, the runtime's seccomp.
    security = container["securityContext"]
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert {"requests", "limits"} <= set(container["resources"])
    # The guidelines: the ConfigMap's files, where --guidelines and --guidelines-zh read them.
    [(folder, name)] = [(path, n) for path, n in mounts.items() if "configMap" in volumes[n]]
    assert volumes[name]["configMap"]["name"] == guidelines["metadata"]["name"]
    given = {flag(container["args"], f) for f in ("--guidelines", "--guidelines-zh")}
    assert given == {f"{folder}/{key}" for key in guidelines["data"]}


def test_collect_container_runs_as_the_deployment_starts_it(tmp_path: Path) -> None:
    """The image's entrypoint (less tini) with the Deployment's arguments and this Python: the Secret's two values in
    the environment (a SQLite file stands in for PostgreSQL), the ConfigMap's files where they are mounted, a
    working folder it cannot write. The probe path answers, the admin token from the Secret opens /admin's API, an
    annotator added as in `kubectl exec deploy/collect -- python -m collect add-annotator NAME` sees the guidelines."""
    from service.launch import free_port

    resources = collect_resources()
    deployment, guidelines = resources["Deployment"], resources["ConfigMap"]
    container = collect_container(deployment)
    [mount] = [m for m in container["volumeMounts"] if m["name"] != "tmp"]
    etc = tmp_path / "etc"
    etc.mkdir()
    for key, text in guidelines["data"].items():
        (etc / key).write_text(text, encoding="utf-8")
    port = free_port()
    args = [a.replace(mount["mountPath"], str(etc)) for a in container["args"]]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    admin_token = secrets.token_urlsafe(24)
    env = {**os.environ, "COLLECT_DATABASE_URL": str(tmp_path / "labels.sqlite"), "COLLECT_ADMIN_TOKEN": admin_token}
    entrypoint = stage("collect").exec_form("ENTRYPOINT")
    assert entrypoint[:3] == ["tini", "--", "python"]
    command = [sys.executable, *entrypoint[3:]]
    log = tmp_path / "serve.log"
    with read_only_folder(tmp_path / "cwd") as cwd, running([*command, *args], env, cwd, log) as proc:
        wait_healthy(proc, port, log, container["readinessProbe"]["httpGet"]["path"])
        added = subprocess.run(
            [*command, "add-annotator", "tester"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
        )
        assert added.returncode == 0, added.stderr
        shown = get_json(port, "/api/guidelines", added.stdout.strip())
        assert shown == {"en": guidelines["data"]["guidelines.md"], "zh": guidelines["data"]["guidelines.zh.md"]}
        assert get_json(port, "/api/admin/stats", admin_token)

        # docs/collect.md: failed logins are counted per address, and a proxy on loopback (trusted by uvicorn's
        # default) has its X-Forwarded-For believed; past the limit even the right token is refused.
        def status(token: str, client: str) -> int:
            return get_status(port, "/api/admin/stats", token, {"X-Forwarded-For": client})

        assert [status("not-the-admin-token", "192.0.2.1") for _ in range(20)] == [403] * 20
        assert status(admin_token, "192.0.2.1") == 429 and status(admin_token, "192.0.2.2") == 200
        proc.terminate()
        proc.wait(timeout=20)


def get_json(port: int, path: str, token: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def get_status(port: int, path: str, token: str, headers: dict[str, str]) -> int:
    headers = {"Authorization": f"Bearer {token}", **headers}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_deploying_docs_show_the_manifests_as_they_are() -> None:
    """Every YAML block in docs/collect.md's "Deploying for a team" is one of k8s/collect's (validated) objects."""
    text = (ROOT / "docs" / "collect.md").read_text(encoding="utf-8")
    section = text.split("## Deploying for a team", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert blocks
    ours = [d for path in COLLECT.glob("*.yaml") if path.name != "kustomization.yaml" for d in documents(path)]
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            assert doc in ours, doc
