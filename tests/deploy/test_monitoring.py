"""The monitoring kit holds together without a cluster: the alert rules pass promtool's checks and unit tests, the
PrometheusRule carries exactly the rules file, the dashboard is what its generator writes and is well formed, and every
metric the rules and panels name is one the service exports. (tests/ops/test_prometheus.py runs them for real.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
import yaml
from images import ROOT
from manifests import K8S, documents

from models.records import Moments, RewardStats
from service.core.metrics import Metrics

RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "reward-model.json"


def alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def exported_series() -> set[str]:
    """Every series name the service can export, the drift gauges included (fed so that each family appears)."""
    metrics = Metrics(8)
    stats = RewardStats(Moments(0.0, 1.0), (("a", Moments(0.0, 1.0)), ("b", Moments(0.0, 1.0))))
    metrics.set_model("m", "base", "fp32", "cpu")
    metrics.drift.use_model("m", stats, ("a", "b"))
    heads = np.array([[1.0, 2.0], [0.0, -1.0]], dtype=np.float32)
    metrics.drift.record("m", heads.mean(axis=1), heads, np.array([True, False]), ["x", "yy"])
    metrics.drift.record_components({"model": [1.0, 0.5]})
    for counter in ("requests", "rejected", "openrlhf_splits", "component_failures", "tokens"):
        labels = getattr(metrics, counter)._labelnames
        getattr(metrics, counter).labels(*["x"] * len(labels)).inc()
    metrics.request_latency.labels("x").observe(1)
    metrics.component_latency.labels("x").observe(1)
    return {s.name for family in metrics.registry.collect() for s in family.samples} | {"up"}


def named_metrics(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers before `{`, `[`, or standing alone as rm_*/up)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    return {m for m in re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?=\{|\[)", without_labels)} | set(
        re.findall(r"\b(rm_[a-z0-9_]+)\b", without_labels)
    )


def test_the_prometheus_rule_is_the_rules_file() -> None:
    [rule] = documents(K8S / "base" / "prometheusrule.yaml")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "k8s/base/prometheusrule.yaml must carry deploy/prometheus/alerts.yaml's groups unchanged"
    )


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (Debian: apt install prometheus)"
)
def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    print(checked.stdout.strip())
    tested = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(tested.stdout.strip(), tested.stderr.strip())
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    names = [r["alert"] for r in alerts()]
    assert len(names) == len(set(names))
    cases = yaml.safe_load(RULE_TESTS.read_text())
    assert cases["rule_files"] == [RULES.name]
    fired = {
        case["alertname"]
        for test in cases["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == set(names), set(names) ^ fired
    for rule in alerts():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_the_dashboard_is_its_generator_s_and_well_formed() -> None:
    spec = importlib.util.spec_from_file_location("dashboard", ROOT / "deploy" / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert DASHBOARD.read_text() == generator.render(), "run: python deploy/grafana/dashboard.py"
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    taken: set[tuple[int, int]] = set()
    for p in board["panels"]:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells
    known_alerts = {r["alert"] for r in alerts()}
    for p in panels():
        assert p["title"] and p["description"] and p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs))
        for target in p["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables and target["datasource"] == p["datasource"], (p["title"], used)
        # An alert a panel's description names exists.
        assert set(re.findall(r"\b(Reward\w+)\b", p["description"])) <= known_alerts, p["title"]


def test_rules_panels_and_autoscalers_name_only_metrics_the_service_exports() -> None:
    exported = exported_series()
    expressions = [r["expr"] for r in alerts()] + [t["expr"] for p in panels() for t in p["targets"]]
    for path in K8S.rglob("scaledobject*.yaml"):
        expressions += [t["metadata"]["query"] for d in documents(path) for t in d["spec"]["triggers"] if "query" in t]
    adapter = yaml.safe_load((ROOT / "deploy" / "prometheus" / "adapter-values.yaml").read_text())
    expressions += [r["seriesQuery"] for r in adapter["rules"]["custom"]]
    functions = {
        "sum", "rate", "increase", "delta", "avg", "max", "min", "count", "abs", "histogram_quantile", "vector",
        "avg_over_time", "max_over_time", "by", "on", "and", "or",
    }  # fmt: skip
    for expr in expressions:
        unknown = named_metrics(expr) - exported - functions
        assert not unknown, (expr, unknown)


def test_the_service_monitor_scrapes_the_service_s_metrics() -> None:
    from service.protocols.ops import router

    [monitor] = documents(K8S / "base" / "servicemonitor.yaml")
    [service] = documents(K8S / "base" / "service.yaml")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and "/metrics" in {r.path for r in router.routes}  # type: ignore[attr-defined]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
