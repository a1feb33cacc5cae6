"""The Grafana dashboard for the reward-model service, written as data: `python deploy/grafana/dashboard.py` rewrites
deploy/grafana/reward-model.json (tests/deploy/test_monitoring.py checks the two agree, and runs every expression
against a real Prometheus scraping a live service)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("reward-model.json")
SEL = 'job=~"$job", instance=~"$instance"'
# Requests that are scoring work: not probes, scrapes or unknown paths (which would dilute shares and latencies).
WORK = SEL + ', endpoint!~"/metrics|/healthz|/readyz|/info|other"'
RATE = "$__rate_interval"


def q(name: str, labels: str = SEL) -> str:
    return f"{name}{{{labels}}}"


def rate(name: str, labels: str = SEL) -> str:
    return f"rate({q(name, labels)}[{RATE}])"


def quantile(p: float, histogram: str, by: str = "", labels: str = SEL) -> str:
    return f"histogram_quantile({p}, sum by (le{', ' + by if by else ''}) ({rate(histogram + '_bucket', labels)}))"


def share(status: str) -> str:
    """The share of scoring requests answered with `status`; 0 (not "no data") while there are none."""
    errors = "sum(" + rate("rm_requests_total", WORK + ', status=~"' + status + '"') + ")"
    return f"({errors} or vector(0)) / sum({rate('rm_requests_total', WORK)})"


def mean(histogram: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} ({rate(histogram + '_sum')}) / sum{group} ({rate(histogram + '_count')})"


PADDING = SEL + ', kind="padding"'
MEDIAN = SEL + ', quantile="0.5"'


def P(title: str, description: str, unit: str, *targets: tuple[str, str], kind: str = "timeseries") -> dict[str, Any]:
    """A panel's content: its title, what it shows, its unit and its (expression, legend) targets."""
    return {"title": title, "description": description, "unit": unit, "targets": list(targets), "kind": kind}


# One panel per entry; the table reads better unwrapped.
# fmt: off
ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Traffic and errors", [
        P("Requests/s by endpoint", "Scoring requests, every dialect.", "reqps",
          (f"sum by (endpoint) ({rate('rm_requests_total', WORK)})", "{{endpoint}}")),
        P("Answers/s by status", "499: the client left before its answer.", "reqps",
          (f"sum by (status) ({rate('rm_requests_total', WORK)})", "{{status}}")),
        P("5xx share", "Server errors among scoring requests (alert: RewardModelErrors).", "percentunit",
          (share("5.."), "5xx")),
        P("429 share", "Refused by admission: would wait past RM_MAX_QUEUE_SECONDS (alert: RewardModelOverloaded).",
          "percentunit", (share("429"), "429")),
        P("Refusals/s by reason", "4xx by kind (rm_rejected_total).", "reqps",
          (f"sum by (reason) ({rate('rm_rejected_total')})", "{{reason}}")),
        P("Pairs/s", "Scored; repeats scored once; dropped (client gone); cut to the max length.", "ops",
          (f"sum({rate('rm_pairs_total')})", "scored"), (f"sum({rate('rm_repeated_pairs_total')})", "repeats"),
          (f"sum({rate('rm_dropped_pairs_total')})", "dropped"),
          (f"sum({rate('rm_truncated_inputs_total')})", "truncated")),
    ]),
    ("Latency", [
        P("Request latency p50 / p99 by endpoint", "Whole requests, as the server saw them.", "s",
          (quantile(0.5, "rm_request_latency_seconds", "endpoint", WORK), "p50 {{endpoint}}"),
          (quantile(0.99, "rm_request_latency_seconds", "endpoint", WORK), "p99 {{endpoint}}")),
        P("Where the time goes, p99", "Per pair: queue wait; per batch: inference; per request: tokenising.", "s",
          (quantile(0.99, "rm_queue_wait_seconds"), "queue wait"),
          (quantile(0.99, "rm_inference_seconds"), "inference (batch)"),
          (quantile(0.99, "rm_tokenize_seconds"), "tokenise")),
    ]),
    ("Capacity and autoscaling", [
        P("Expected wait per replica", "The wait a new request would face: queued work / measured pace. The "
          "autoscaler's signal (target 5 s); admission refuses past RM_MAX_QUEUE_SECONDS.", "s",
          (q("rm_expected_wait_seconds"), "{{instance}}"),
          (f"avg({q('rm_expected_wait_seconds')})", "average (what the autoscaler sees)")),
        P("Queue depth per replica", "Pairs admitted and not yet in a batch.", "short",
          (q("rm_queue_depth"), "{{instance}}")),
        P("Replicas", "Scraped and up; ready (not draining).", "short",
          ('count(up{job=~"$job"} == 1)', "up"), (f"sum({q('rm_ready')})", "ready")),
        P("Mean pairs per batch", "Batches fill up under load (continuous batching).", "short",
          (mean("rm_batch_size"), "pairs per batch")),
        P("Padding share of the tokens run", "Padding is wasted work (CPU batches admit at most 5%).", "percentunit",
          (f"sum({rate('rm_tokens_total', PADDING)}) / sum({rate('rm_tokens_total')})", "padding")),
        P("Tokens/s", "Real and padding tokens through the model.", "short",
          (f"sum by (kind) ({rate('rm_tokens_total')})", "{{kind}}")),
    ]),
    ("Model", [
        P("Live model per replica", "rm_model_info: what each replica serves.", "short",
          (f"max by (instance, model_id, base_model, precision, provider) ({q('rm_model_info')})", ""), kind="table"),
        P("Reference distance and its limit", "Largest |served - exported| probe reward at load (alerts: "
          "RewardModelReferenceNearLimit, RewardModelReferenceOverLimit).", "short",
          (q("rm_reference_max_abs_diff"), "distance {{instance}}"), (q("rm_reference_limit"), "limit {{instance}}")),
        P("Failed batches and refused reloads", "Batches that failed in the runtime (their requests got 500); "
          "/admin/reload answered 422 (alerts: RewardModelInferenceErrors, RewardModelReloadFailed).", "short",
          (f"sum by (instance) (increase({q('rm_batch_errors_total')}[{RATE}]))", "failed batches {{instance}}"),
          (f"sum by (instance) (increase({q('rm_reload_failures_total')}[{RATE}]))", "refused reloads {{instance}}")),
    ]),
    ("Rewards and drift: watch the policy", [
        P("Served rewards", "Every raw reward served (rm_score histogram).", "short",
          (f"sum by (le) (increase({q('rm_score_bucket')}[{RATE}]))", "{{le}}"), kind="heatmap"),
        P("Reward quantiles over the drift window", "p5 / p50 / p95 of the last RM_DRIFT_WINDOW scored pairs.",
          "short", (q("rm_drift_reward"), "q{{quantile}} {{instance}}")),
        P("Reward shift vs the bundle's evaluation", "Window quantiles in evaluation std from the evaluation mean "
          "(alert: RewardFarFromEvaluation).", "short", (q("rm_drift_reward_shift"), "q{{quantile}} {{instance}}")),
        P("Length correlation", "Spearman of reward with completion length. Reward up while this rises: the policy "
          "is learning length (alert: RewardLengthExploitation).", "short",
          (q("rm_drift_length_correlation"), "{{instance}}")),
        P("Completion length", "Characters, window quantiles.", "short",
          (q("rm_drift_completion_chars"), "q{{quantile}} {{instance}}")),
        P("Shares of the window", "Cut to the max length; repeating an earlier completion; above the evaluation "
          "mean + 2 std (alerts: RewardTruncationRising, RewardDuplicateCompletions, RewardPilingAtTop).",
          "percentunit", (q("rm_drift_truncated_share"), "truncated {{instance}}"),
          (q("rm_drift_duplicate_share"), "duplicate {{instance}}"),
          (q("rm_drift_reward_high_share"), "high {{instance}}")),
        P("Per objective: median reward and shift", "Bundles with several objectives (alert: "
          "RewardObjectivesDiverging).", "short",
          (q("rm_drift_objective_reward", MEDIAN), "median {{objective}} {{instance}}"),
          (q("rm_drift_objective_shift", MEDIAN), "shift {{objective}} {{instance}}")),
        P("Per component: mean over the window", "Reward-recipe components (model, math, code, format, ...).",
          "short", (q("rm_drift_component_mean"), "{{component}} {{instance}}")),
        P("Drift window", "Scored pairs the drift signals cover.", "short",
          (q("rm_drift_window_pairs"), "{{instance}}"), kind="stat"),
    ]),
    ("Reward-recipe verifiers", [
        P("Component time p99", "One request's samples in a verifier component.", "s",
          (quantile(0.99, "rm_component_seconds", "component"), "{{component}}")),
        P("Component failures/s", "timeout, over_budget, no_answer, sandbox, error.", "ops",
          (f"sum by (component, failure) ({rate('rm_component_failures_total')})", "{{component}} {{failure}}")),
        P("Verifier workers", "Busy and total worker processes; kills at a deadline.", "short",
          (f"sum({q('rm_verifier_busy')})", "busy"), (f"sum({q('rm_verifier_workers')})", "workers"),
          (f"sum(increase({q('rm_verifier_kills_total')}[{RATE}]))", "killed")),
    ]),
    ("OpenRLHF", [
        P("/get_reward queries by how they were read", "Where the response was found, the policy's chat markup, "
          "and how a refused conversation was rewritten.", "reqps",
          (f"sum by (split, markup, repair) ({rate('rm_openrlhf_splits_total')})", "{{split}} {{markup}} {{repair}}")),
    ]),
    ("Per replica", [
        P("Requests/s per replica", "A balancer that spreads unevenly shows here.", "reqps",
          (f"sum by (instance) ({rate('rm_requests_total', WORK)})", "{{instance}}")),
        P("p99 latency per replica", "Whole scoring requests.", "s",
          (quantile(0.99, "rm_request_latency_seconds", "instance", WORK), "{{instance}}")),
        P("Pairs/s per replica", "Pairs scored.", "ops",
          (f"sum by (instance) ({rate('rm_pairs_total')})", "{{instance}}")),
        P("Mean batch size per replica", "Pairs per batch.", "short",
          (mean("rm_batch_size", "instance"), "{{instance}}")),
    ]),
]
# fmt: on


def variable(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def panel(pid: int, spec: dict[str, Any], x: int, y: int, width: int) -> dict[str, Any]:
    title, description, unit, targets, kind = (spec[k] for k in ("title", "description", "unit", "targets", "kind"))
    out: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                **({"format": "table", "instant": True} if kind == "table" else {}),
                **({"format": "heatmap"} if kind == "heatmap" else {}),
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, specs in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            }
        )
        y += 1
        per_line = {1: 1, 2: 2, 4: 2}.get(len(specs), 3)
        width = 24 // per_line
        for i, spec in enumerate(specs):
            panels.append(panel(len(panels) + 1, spec, (i % per_line) * width, y + (i // per_line) * 8, width))
        y += 8 * -(-len(specs) // per_line)
    return {
        "uid": "rlhf-reward-model",
        "title": "Reward model service",
        "description": "rlhf-reward: traffic, latency, capacity and autoscaling, the served model, and the "
        "reward-drift signals that watch the policy.",
        "tags": ["rlhf", "reward-model"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("job", "label_values(rm_model_info, job)", "Job"),
                variable("instance", 'label_values(rm_model_info{job=~"$job"}, instance)', "Replica"),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
