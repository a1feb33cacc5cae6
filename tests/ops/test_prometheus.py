"""The dashboard, the alerts and the autoscalers' queries against a real Prometheus (Debian's package): it scrapes a
live service, with a reward recipe and a two-objective bundle, under a short load that reaches every series (answers,
4xx, 429s, real 5xx from a runtime fault, a refused reload, OpenRLHF queries, verifier failures, a drifting policy);
then every panel's and every alert's expression must return data through the HTTP API, and every rule must evaluate."""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from builders import BOOM
from servers import LiveServer, free_port

from bench import drift

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "monitoring-admin-key"
POD = {"namespace": "rm-test", "pod": "reward-model-0"}  # as a ServiceMonitor would label the series
# Grafana's variables, as a user picking "All" gets them; $__rate_interval is 4 scrape intervals at least.
VARIABLES = {"$job": "reward-model", "$instance": ".*", "$__rate_interval": "1m"}
RECIPE = """components:
  - {kind: model}
  - {kind: length, weight: 0.1, max: 400, buffer: 200, unit: chars}
  - {kind: repetition, weight: 0.2, n: 3}
  - {kind: math, weight: 0.0, timeout: 5}
"""

# Long enough to be cut to the bundle's 64 tokens; 128 pairs, the queue's whole bound.
BURST = [{"prompt": f"Question {i}: rivers?", "completion": "rivers are " + "and more, " * 60} for i in range(128)]

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Prometheus is not installed (Debian: apt install prometheus)"
)


@pytest.fixture(scope="module")
def service(monitored_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    recipe = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    recipe.write_text(RECIPE)
    env = {
        "RM_ADMIN_API_KEY": ADMIN,
        "RM_REWARD_RECIPE": str(recipe),
        "RM_VERIFIER_WORKERS": "1",
        "RM_MAX_QUEUE_PAIRS": "128",  # two big requests at once overflow it: real 429s
        "RM_MAX_ITEMS_PER_REQUEST": "128",
        "RM_DRIFT_WINDOW": "256",
        "RM_LOG_LEVEL": "warning",
    }
    server = LiveServer(monitored_bundle, "--precision", "fp32", env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus(service: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yaml")],
        "scrape_configs": [
            {
                "job_name": "reward-model",
                "static_configs": [{"targets": [f"127.0.0.1:{service.port}"], "labels": POD}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        "prometheus",
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (folder / "prometheus.log").read_text()
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def load(url: str, png: Path) -> dict[str, int]:
    """About fifteen seconds of traffic that reaches every series the dashboard and the rules read."""
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def post(path: str, body: Any, **kw: Any) -> None:
        status = httpx.post(url + path, json=body, timeout=120, **kw).status_code
        with lock:
            statuses[f"{path} {status}"] = statuses.get(f"{path} {status}", 0) + 1

    # A policy drifting over three checkpoints (the drift gauges, per objective and per component), plotted.
    result = drift.run(url, steps=3, prompts_n=8, group=4, seed=0)
    drift.plot(result, png)
    for round_ in range(4):
        math = [{"prompt": "2+2?", "completion": f"It is \\boxed{{{4 + round_ % 2}}}.", "reference": "4"}] * 2
        post("/score", {"items": math})  # the math verifier's worker runs
        post("/compare", {"prompt": "Tell me about tea.", "completions": ["tea is kind.", "tea is rude."]})
        post("/get_reward", {"query": ["Human: hi\n\nAssistant: hello there"], "prompts": ["Human: hi"]})
        post("/pooling", {"input": ["tea is kind."]})
        post("/predict", {"inputs": ["tell me about maps", "maps are kind."]})
        post("/score", {"items": [{"prompt": "x"}]})  # 422
        post("/score", {"items": [{"prompt": "Say it.", "completion": f"{BOOM} now"}]})  # a real 500
        headers = {"Authorization": f"Bearer {ADMIN}"}
        post("/admin/reload", {"model_dir": "/etc"}, headers=headers)  # refused: outside the root
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # 8 x 128 pairs at once: past 128 queued, 429s
            list(pool.map(lambda _: post("/score", {"items": BURST}), range(8)))
        time.sleep(1.5)
    return statuses


def with_bool(expr: str) -> str:
    """An alert's expression with each comparison made `bool`: 0 or 1 for every series, so it returns data whether or
    not the alert would fire now (a filter returns nothing while all is well). Matchers inside {} are left alone."""
    out, depth, quoted, i = [], 0, False, 0
    while i < len(expr):
        c = expr[i]
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "{}":
            depth += 1 if c == "{" else -1
        elif not quoted and depth == 0 and (m := re.match(r"(==|!=|>=|<=|>|<)(\s*bool\b)?", expr[i:])):
            out.append(m.group(0) if m.group(2) else m.group(1) + " bool")
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def finite(series: list[dict[str, Any]]) -> list[float]:
    return [v for s in series if (v := float(s["value"][1])) == v and abs(v) != float("inf")]


def test_every_panel_alert_and_autoscaler_query_returns_data(
    service: LiveServer, prometheus: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    statuses = load(service.url, tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 10_000  # python -m bench.drift's picture, from this service
    for wanted in ("/score 200", "/score 422", "/score 429", "/score 500", "/admin/reload 422", "/get_reward 200"):
        assert statuses.get(wanted), (wanted, statuses)
    time.sleep(3)  # the last scrapes, and rule evaluations over them
    print(f"\nload: {time.monotonic() - started:.1f} s, answers {dict(sorted(statuses.items()))}")

    board = (ROOT / "deploy" / "grafana" / "reward-model.json").read_text()
    targets = [(p["title"], t) for p in yaml.safe_load(board)["panels"] if p["type"] != "row" for t in p["targets"]]
    rules = [
        r for g in yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())["groups"] for r in g["rules"]
    ]
    checks: list[tuple[str, str, str]] = []  # (kind, name, expression)
    for title, target in targets:
        expr = target["expr"]
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        checks.append(("panel", f"{title} [{target['refId']}]", expr))
    checks += [("alert", r["alert"], with_bool(r["expr"])) for r in rules]
    for path in sorted((ROOT / "k8s").rglob("scaledobject*.yaml")):
        for trigger in yaml.safe_load(path.read_text())["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                checks.append(("keda", path.parent.name, trigger["metadata"]["query"]))
    adapter = yaml.safe_load((ROOT / "deploy" / "prometheus" / "adapter-values.yaml").read_text())
    for rule in adapter["rules"]["custom"]:  # rendered as prometheus-adapter does for an HPA's Pods metric
        matchers = f'namespace="{POD["namespace"]}",pod=~"{POD["pod"]}"'
        expr = rule["metricsQuery"].replace("<<.Series>>", rule["name"]["as"]).replace("<<.LabelMatchers>>", matchers)
        checks.append(("adapter", rule["name"]["as"], expr.replace("<<.GroupBy>>", "pod")))

    lines, empty = [], []
    for kind, name, expr in checks:
        result = query(prometheus, expr)
        values = finite(result)
        shown = f"{len(result):3} series, first {values[0]:.4g}" if values else "NO DATA"
        lines.append(f"{kind:7} {name[:70]:70} {shown}")
        if not values:
            empty.append((kind, name, expr))
        if kind == "panel":  # every label a legend names is on the series it labels
            legend = next(t["legendFormat"] for title, t in targets if f"{title} [{t['refId']}]" == name)
            for label in re.findall(r"\{\{(\w+)\}\}", legend):
                assert all(label in s["metric"] for s in result), (name, label)
        if kind == "adapter":
            assert {s["metric"].get("pod") for s in result} == {POD["pod"]}
    print("\n".join(lines))
    counts = {k: sum(1 for c in checks if c[0] == k) for k in ("panel", "alert", "keda", "adapter")}
    print(f"evaluated {counts}; without data: {len(empty)}")
    assert not empty, empty
    assert counts["alert"] == len(rules) and counts["panel"] == len(targets)

    # What the load did shows as it should: some 5xx, some 429s, a refused reload.
    def one(expr: str) -> float:
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        [value] = finite(query(prometheus, expr))
        return value

    panel = {f"{title} [{t['refId']}]": t["expr"] for title, t in targets}
    assert one(panel["5xx share [A]"]) > 0 and one(panel["429 share [A]"]) > 0
    assert one('sum(rm_reload_failures_total{job="reward-model"})') >= 4

    # Prometheus loaded every rule and evaluates each without error.
    groups = httpx.get(prometheus + "/api/v1/rules", timeout=30).json()["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in rules}
    for name, rule in loaded.items():
        assert rule["health"] == "ok" and not rule.get("lastError"), (name, rule)
