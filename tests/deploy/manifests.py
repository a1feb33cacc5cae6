"""The Kubernetes manifests as kubectl would see them: documents, strategic merges, kustomize builds of this repo's
kustomizations, and custom resources (KEDA, the Prometheus Operator) checked against their CRDs' vendored schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml
from images import ROOT

K8S = ROOT / "k8s"
# Kinds from CRDs are not in the core schemas: their CRDs' own schemas are vendored in tests/deploy/schemas (each file
# says where it comes from) and checked here, strictly, as the API server's field validation would.
SCHEMAS = Path(__file__).parent / "schemas"
CRDS = {
    (d["apiVersion"], d["kind"]): d["openAPIV3Schema"]
    for d in map(yaml.safe_load, map(Path.read_text, sorted(SCHEMAS.glob("*.yaml"))))
}


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


def strict(schema: Any) -> Any:
    """A CRD schema as strict field validation applies it: an object with `properties` takes no other field (unless
    it keeps unknown fields or declares additionalProperties)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate_custom(doc: dict[str, Any]) -> None:
    """A custom resource against its CRD's vendored schema (a wrong field or type raises), and metadata's basics."""
    schema = CRDS[(doc["apiVersion"], doc["kind"])]
    # Not jsonschema.validate: it first checks the schema's regexes as Python's, and Go's `^(?i)...` is not one.
    jsonschema.Draft202012Validator(strict(schema)).validate(doc)
    assert set(doc["metadata"]) <= {"name", "labels", "annotations", "namespace"} and doc["metadata"]["name"]


def build(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k folder` applies, for these kustomizations: resources (files and folders), then patches
    (strategic merges, and `$patch: delete`)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        out += build(path) if path.is_dir() else documents(path)
    for entry in spec.get("patches", []):
        for patch in documents(folder / entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            [i] = [i for i, d in enumerate(out) if (d["kind"], d["metadata"]["name"]) == key]
            if patch.get("$patch") == "delete":
                del out[i]
            else:
                out[i] = merged(out[i], patch)
    return out
