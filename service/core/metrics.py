"""Every Prometheus object the service exports (prefix rm_), on a registry of its own per app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .drift import DriftWindow

LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKENS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
SCORES = (-10, -5, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 5, 10)


class Metrics:
    def __init__(self, drift_window: int = 4096) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.drift = DriftWindow(drift_window)  # rm_drift_*: computed on scrape, off the request path
        r.register(self.drift)
        self.ready = Gauge(
            "rm_ready", "1 while /readyz answers 200 (loaded, warmed up, not draining), else 0.", registry=r
        )
        self.requests = Counter(
            "rm_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "rm_request_latency_seconds", "Whole request latency.", ["endpoint"], buckets=LATENCY, registry=r
        )
        self.tokenize_latency = Histogram(
            "rm_tokenize_seconds", "Tokenisation time per request.", buckets=LATENCY, registry=r
        )
        self.queue_wait = Histogram(
            "rm_queue_wait_seconds", "Time a pair waits before its batch starts.", buckets=LATENCY, registry=r
        )
        self.inference_latency = Histogram(
            "rm_inference_seconds", "ONNX Runtime time per batch.", buckets=LATENCY, registry=r
        )
        self.batch_size = Histogram("rm_batch_size", "Pairs per batch.", buckets=SIZES, registry=r)
        self.batch_tokens = Histogram("rm_batch_tokens", "Padded tokens per batch.", buckets=TOKENS, registry=r)
        self.padding_fraction = Histogram(
            "rm_padding_fraction", "Share of a batch's tokens that are padding.", buckets=FRACTIONS, registry=r
        )
        self.tokens = Counter("rm_tokens", "Tokens run by the model, real or padding.", ["kind"], registry=r)
        self.queue_depth = Gauge("rm_queue_depth", "Pairs waiting for a batch.", registry=r)
        self.expected_wait = Gauge(
            "rm_expected_wait_seconds",
            "How long a new pair would wait for its answer now: the queued work at the measured pace (admission "
            "refuses requests over RM_MAX_QUEUE_SECONDS; scale out on this).",
            registry=r,
        )
        self.pairs = Counter("rm_pairs", "Pairs scored.", registry=r)
        self.repeats = Counter(
            "rm_repeated_pairs", "Pairs identical to another in the same request, scored once for both.", registry=r
        )
        self.truncated = Counter("rm_truncated_inputs", "Pairs cut to the model's max length.", registry=r)
        self.openrlhf_splits = Counter(
            "rm_openrlhf_splits",
            "/get_reward queries by how the response was found (prefix, suffix of a left-truncated prompt, whole "
            "query, no prompt sent), the policy chat markup recognised (none: scored as plain text), and how a "
            "conversation the reward model's chat template refused was rewritten (none, system_folded, roles_merged, "
            "flattened).",
            ["split", "markup", "repair"],
            registry=r,
        )
        self.scores = Histogram(
            "rm_score", "Raw rewards served (watch for drift and reward hacking).", buckets=SCORES, registry=r
        )
        self.batch_errors = Counter("rm_batch_errors", "Batches that failed inside the runtime.", registry=r)
        self.rejected = Counter("rm_rejected", "Requests refused before scoring.", ["reason"], registry=r)
        self.model_info = Gauge(
            "rm_model_info",
            "The live model bundle (value 1).",
            ["model_id", "base_model", "precision", "provider"],
            registry=r,
        )
        self.dropped = Counter("rm_dropped_pairs", "Pairs dropped because their client went away.", registry=r)
        self.reload_failures = Counter(
            "rm_reload_failures",
            "/admin/reload requests refused (422); the old model or recipe kept serving.",
            registry=r,
        )
        self.reference_diff = Gauge(
            "rm_reference_max_abs_diff",
            "Live model: largest |served - exported| reward over the bundle's reference probes at load (NaN: not "
            "checked). Alert when it nears the limit of RM_REFERENCE_TOLERANCE x the fp32 reward std.",
            registry=r,
        )
        self.reference_diff.set(float("nan"))
        self.reference_limit = Gauge(
            "rm_reference_limit",
            "Live model: the largest reference distance the load check accepts (RM_REFERENCE_TOLERANCE x the fp32 "
            "reward std; NaN: not checked).",
            registry=r,
        )
        self.reference_limit.set(float("nan"))

        self.component_latency = Histogram(
            "rm_component_seconds",
            "Time one request's samples took in a reward component (recipe components by name).",
            ["component"],
            buckets=LATENCY,
            registry=r,
        )
        self.component_failures = Counter(
            "rm_component_failures",
            "Samples a reward component failed on, by failure: timeout, no_answer, sandbox, error.",
            ["component", "failure"],
            registry=r,
        )
        self.sandbox_kills = Counter(
            "rm_verifier_kills", "Verifier workers killed at a deadline (and replaced).", registry=r
        )
        self.verifier_workers = Gauge("rm_verifier_workers", "Verifier worker processes.", registry=r)
        self.verifier_busy = Gauge("rm_verifier_busy", "Verifier workers working now.", registry=r)

    def set_model(self, model_id: str, base_model: str, precision: str, provider: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model_id, base_model, precision, provider).set(1)
