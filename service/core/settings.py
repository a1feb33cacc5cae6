"""Settings: every knob of the service, read from RM_* environment variables (or CLI flags) in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Measured on 2 CPU cores: big batches get slower per pair (cache), so a CPU wants small token-bounded batches;
# a GPU wants large ones. Unset limits take the default for the device the model lands on.
# A CPU gains little from waiting for batch mates (batch 8 is barely faster than batch 1), a GPU gains a lot.
# Padding is pure waste on CPU, where a pair costs about the same alone as in a batch: batches there admit at
# most 5% padding (measured: with fixed-size length groups, 64 clients x 1 pair ran at 25% padding).
CPU_LIMITS = {"max_batch_tokens": 2048, "max_batch_size": 16, "max_wait_ms": 0.0, "max_padding": 0.05}
GPU_LIMITS = {"max_batch_tokens": 65536, "max_batch_size": 256, "max_wait_ms": 2.0, "max_padding": 0.3}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RM_", protected_namespaces=(), extra="ignore")

    model_dir: Path | None = Field(
        None,
        description="Model bundle folder written by training.fit (needed unless the reward recipe has no `model` "
        "component: a verifier-only service).",
    )
    reward_recipe: Path | None = Field(
        None,
        description="A reward recipe (YAML or TOML): the reward's components (the model, math and code verifiers, "
        "format, length and repetition terms) and their weights. Unset: the model alone, as always.",
    )
    verifier_workers: int = Field(2, ge=1, le=64, description="Worker processes for math and format verifiers.")
    verifier_memory_mb: int = Field(2048, ge=128, description="Memory each verifier worker may use.")
    sandbox: Literal["bwrap", "limits-only"] = Field(
        "bwrap",
        description="How code verifiers run policy code: bubblewrap namespaces (no network, no host files) plus "
        "limits; `limits-only` accepts running it with resource limits alone where no namespaces can be made.",
    )
    sandbox_slots: int = Field(4, ge=1, le=64, description="Policy programs run at once (one uid each as root).")
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    precision: Literal["fp32", "int8", "fp16"] | None = Field(
        None,
        description="Graph to serve; default int8 on CPU when the bundle has it and its export measured it at least "
        "1.1x faster than fp32, fp16 on GPU when the bundle has it and it reproduces the reference probes there, "
        "fp32 otherwise.",
    )
    reference_check: Literal["strict", "warn", "off"] = Field(
        "strict",
        description="At load, re-score the bundle's reference probes: strict refuses a bundle whose tokens or "
        "rewards differ from the export's (another tokenizers or ONNX Runtime build, another device), warn logs it.",
    )
    reference_tolerance: float = Field(
        0.02, gt=0, description="Largest |served - reference| probe reward, in units of the fp32 reward std."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="CUDA when onnxruntime-gpu sees a GPU.")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per batch (0: one per core).")
    inter_op_threads: int = Field(1, ge=1, description="ONNX Runtime inter-op threads.")
    ort_spinning: bool = Field(
        False, description="Let idle ONNX Runtime threads busy-wait (steals CPU from HTTP and tokenising)."
    )
    inference_workers: int = Field(1, ge=1, le=16, description="Batches run concurrently (1 is best on CPU).")
    tokenizer_threads: int = Field(1, ge=1, le=16, description="Threads tokenising requests off the event loop.")
    inline_tokenize_chars: int = Field(
        2048,
        ge=0,
        description="Requests of plain strings with at most this many characters in all are tokenised on the event "
        "loop, skipping the hand-off to a tokeniser thread (~0.1 ms per request measured here; 2048 characters "
        "hold the loop for ~0.5 ms). 0: always use the threads.",
    )
    max_batch_tokens: int | None = Field(None, ge=1, description="Padded tokens per batch (batch size × longest).")
    max_batch_size: int | None = Field(None, ge=1, description="Pairs per batch.")
    max_wait_ms: float | None = Field(
        None, ge=0, le=10_000, description="How long a free worker waits for batch mates (default: 0 CPU, 2 GPU)."
    )
    max_padding: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Largest share of a batch's tokens that may be padding (default: 0.05 CPU, 0.3 GPU).",
    )
    max_queue_seconds: float = Field(
        60.0,
        ge=0,
        description="Admission by expected wait: a request whose pairs would wait longer than this (the work queued "
        "ahead of it and its own, at the pace the model is measured to go) gets 429 at once, with a Retry-After "
        "saying when it would fit, instead of timing out in the queue. Keep it below your clients' timeouts "
        "(OpenRLHF: 180 s; service.client: 120 s). 0: admit by RM_MAX_QUEUE_PAIRS alone.",
    )
    max_queue_pairs: int = Field(
        4096, ge=1, description="Pairs admitted and not yet run before new requests get 429 (a memory cap)."
    )
    max_items_per_request: int = Field(1024, ge=1, description="Pairs (or completions) per request.")
    max_chars_per_text: int = Field(200_000, ge=1, description="Characters per prompt or completion (413 beyond).")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Request body size (413 beyond).")
    api_key: SecretStr | None = Field(None, description="If set, scoring endpoints need 'Authorization: Bearer KEY'.")
    admin_api_key: SecretStr | None = Field(
        None,
        description="Key for /admin/* ('Authorization: Bearer KEY'), separate from the scoring key so a trainer "
        "that can score cannot swap the model. Unset: the admin endpoints are disabled (403).",
    )
    normalize: bool = Field(
        False,
        description="Default of every request's `normalize`: rewards as (r - mean) / std with the bundle's "
        "evaluation statistics (OpenRLHF serve_rm's --reward.normalize_enable). A request's own `normalize` wins.",
    )
    drift_window: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="Reward-drift signals (rm_drift_* gauges, /info's `drift`) over the last this many scored pairs; "
        "computed when /metrics is scraped, not per request. 0: off.",
    )
    warmup: bool = Field(True, description="Run one inference before reporting ready.")
    drain_seconds: float | None = Field(
        None,
        ge=0,
        description="On SIGTERM, how long accepted requests may take to finish; what is still queued then is answered "
        "503 with Retry-After and the process exits 3. Default: RM_MAX_QUEUE_SECONDS + 10, so every request the "
        "queue admitted can finish.",
    )
    shutdown_delay_seconds: float = Field(
        0.0,
        ge=0,
        le=300,
        description="On SIGTERM, keep serving this long with /readyz at 503 (so load balancers stop routing here) "
        "before refusing new work and draining. A second signal stops at once.",
    )
    keep_alive_seconds: int = Field(
        75,
        ge=1,
        le=3600,
        description="How long an idle keep-alive connection stays open. Keep it above the idle timeout of any load "
        "balancer in front (60 s on AWS ALB), which would otherwise reuse a connection the server is closing and "
        "answer 502; trainers reuse connections across steps that often take longer than uvicorn's 5 s default.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection must deliver a request's headers within this long after it opens (or after its "
        "previous answer); otherwise it is closed, so idle or trickling sockets cannot use up the server's files.",
    )
    body_timeout_seconds: float = Field(
        60.0, gt=0, description="A request's body must arrive within this long after its headers (408 otherwise)."
    )
    max_connections: int = Field(
        8192,
        ge=1,
        description="Open connections (and requests in progress) beyond which new requests get a JSON 503 at once; "
        "kept below the process's open-file limit (raised to its hard limit at start). Keep it above the number of "
        "requests your trainers have in flight at once (OpenRLHF sends every sample of a rollout as its own).",
    )
    max_header_bytes: int = Field(
        65536, ge=1024, description="Request line plus headers; a request with more is answered 431 and closed."
    )
    model_root: Path | None = Field(
        None,
        description="/admin/reload loads only bundles inside this folder (symbolic links resolved; nothing outside "
        "it). Default: the folder that holds RM_MODEL_DIR.",
    )
    log_level: str = Field("info", description="uvicorn log level.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_items_per_request > self.max_queue_pairs:
            raise ValueError("max_items_per_request cannot exceed max_queue_pairs (such a request could never run)")
        if self.model_dir is None and self.reward_recipe is None:
            raise ValueError("model_dir is required (RM_MODEL_DIR), unless a reward recipe rewards without a model")
        return self

    @property
    def drain_timeout(self) -> float:
        """RM_DRAIN_SECONDS, or by default long enough for everything the queue admits."""
        return self.max_queue_seconds + 10.0 if self.drain_seconds is None else self.drain_seconds

    @property
    def reload_root(self) -> Path:
        """The folder /admin/reload may load bundles (and recipes) from, resolved."""
        anchor = self.model_dir or self.reward_recipe
        assert anchor is not None
        return (self.model_root or anchor.resolve().parent).resolve()

    def batch_limits(self, on_gpu: bool) -> tuple[int, int, float, float]:
        """(max_batch_tokens, max_batch_size, max_wait_ms, max_padding) with the device's defaults for unset values."""
        defaults = GPU_LIMITS if on_gpu else CPU_LIMITS
        return (
            self.max_batch_tokens or int(defaults["max_batch_tokens"]),
            self.max_batch_size or int(defaults["max_batch_size"]),
            defaults["max_wait_ms"] if self.max_wait_ms is None else self.max_wait_ms,
            defaults["max_padding"] if self.max_padding is None else self.max_padding,
        )
