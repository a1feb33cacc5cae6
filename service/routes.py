"""Thin HTTP handlers: /score (routed in service.vllm) /compare /get_reward /admin/reload and the probes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.objectives import weight_vector

from . import openrlhf
from .bodies import BoundedJSONRoute
from .deps import AcceptingPipeline, LifecycleDep, MetricsDep, PipelineDep, SettingsDep
from .errors import ClientDisconnected, NotReady, ReloadRefused
from .lifecycle import Phase
from .middleware import bearer_matches
from .pipeline import Pipeline, Repair, ScoreResult, ScoringRequest
from .schemas import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    ReloadRequest,
    ReloadResponse,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
)

T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "Body that is not UTF-8 text"),
        (401, "Missing or wrong API key"),
        (408, "The body did not arrive within RM_BODY_TIMEOUT_SECONDS"),
        (413, "Too many items, a text over the character limit, or a body over the size limit"),
        (422, "Malformed request; `error` names the field"),
        (429, "Queue full; retry after `Retry-After` seconds"),
        (500, "Inference failed for the batch this request was in"),
        (503, "Not ready (loading, warming up or draining)"),
    ]
}
router = APIRouter(route_class=BoundedJSONRoute)


def json_response(payload: Any) -> Response:
    # allow_nan=False: a NaN reward is a fault to surface, not invalid JSON to send.
    return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued pairs) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnected()
    return task.result()


async def run_scoring(
    request: Request, pipeline: Pipeline, body: ScoringRequest, repair: Repair | None = None
) -> ScoreResult:
    return await until_disconnect(request, pipeline.score(body, repair))


async def score(body: ScoreRequest, request: Request, pipeline: Pipeline) -> Response:
    """Our POST /score; the route is service.vllm's, which also takes vLLM's /score bodies at that path."""
    result = await run_scoring(request, pipeline, body)
    answer = {"scores": result.values(body.normalize, body.weights), "model": result.model.model_id}
    return json_response(answer | {"truncated": result.truncated} | with_objectives(result))


@router.post("/compare", response_model=CompareResponse, responses=ERRORS)
async def compare(body: CompareRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """Rank two or more completions of one prompt, with Bradley–Terry win probabilities."""
    result = await run_scoring(request, pipeline, body)
    raw = np.asarray(result.values(False, body.weights), dtype=np.float64)
    ranking = sorted(range(len(raw)), key=lambda i: -raw[i])  # stable: ties keep input order
    probabilities = 1.0 / (1.0 + np.exp(-(raw[:, None] - raw[None, :])))
    return json_response(
        {
            "scores": result.values(body.normalize, body.weights),
            "ranking": ranking,
            "probabilities": probabilities.tolist(),
            "model": result.model.model_id,
            "truncated": result.truncated,
        }
        | with_objectives(result)
    )


def with_objectives(result: ScoreResult) -> dict[str, Any]:
    """`objectives` for a multi-objective model; nothing for one reward, whose answers stay as they always were."""
    objectives = result.objectives()
    return {"objectives": objectives} if objectives else {}


@router.post("/get_reward", response_model=RewardResponse, responses=ERRORS)
async def get_reward(body: RewardRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """OpenRLHF's remote reward protocol, so its trainers work unchanged with --reward.remote_url. A conversation the
    reward model's chat template refuses is rewritten until it formats (a legitimate rollout never gets a 4xx)."""
    result = await run_scoring(request, pipeline, body, openrlhf.repairs)
    for pair, repair in zip(body.reward_pairs(), result.repairs, strict=True):
        pipeline.metrics.openrlhf_splits.labels(pair.how, pair.markup, repair).inc()
    rewards = result.values(body.normalize)
    # Per-objective rewards go into extra_logs, so OpenRLHF logs each head beside the combined reward.
    extra = {"raw_reward": result.raw.tolist(), "truncated": result.truncated_mask.astype(float).tolist()}
    extra |= result.objectives()
    return json_response({"rewards": rewards, "scores": rewards, "extra_logs": extra})


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=ERRORS | {403: {"model": ErrorResponse, "description": "Admin endpoints disabled (no RM_ADMIN_API_KEY)"}},
)
async def reload(
    pipeline: AcceptingPipeline, settings: SettingsDep, body: ReloadRequest | None = None
) -> dict[str, Any]:
    """Load a bundle beside the live one, warm it up, then swap it in; a broken bundle is refused and the old
    model keeps serving. Requests in flight finish on the model they started with. Only bundles inside the model
    root (RM_MODEL_ROOT) load; a relative `model_dir` is taken from there."""
    previous = pipeline.model.model_id if pipeline.model else None
    target = reload_target((body.model_dir if body else None) or str(settings.model_dir), settings.reload_root)
    if target is None:
        # Said the same way whether or not the path exists: the answer reveals nothing outside the root.
        raise ReloadRefused(
            f"reload refused, still serving {previous}: model_dir must name a folder inside the model root "
            "(RM_MODEL_ROOT)",
            field="model_dir",
        )
    try:
        new = await pipeline.load(str(target))
    except Exception as e:  # BundleError, or an ONNX graph the runtime cannot load
        raise ReloadRefused(f"reload refused, still serving {previous}: {e}") from e
    return {"model_id": new.model_id, "previous_model_id": previous, "bundle": str(new.bundle.path)}


def reload_target(model_dir: str, root: Path) -> Path | None:
    """`model_dir` (relative to `root`) with every link resolved, if that lies inside `root`; else None."""
    try:
        target = (root / model_dir).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, an embedded NUL
        return None
    return target if target.is_relative_to(root) else None


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
async def readyz(lifecycle: LifecycleDep, pipeline: PipelineDep) -> dict[str, str]:
    """Bundle loaded and warmed up, and not draining."""
    if lifecycle.draining:
        raise NotReady("draining")
    if lifecycle.phase is Phase.STARTING or pipeline.model is None:
        raise NotReady("loading or warming up")
    return {"status": "ready", "model": pipeline.model.model_id}


@router.get("/info", responses={503: {"model": ErrorResponse}})
async def info(request: Request, pipeline: PipelineDep, settings: SettingsDep) -> dict[str, Any]:
    """What is being served and how. The bundle's folder on disk is shown only with the admin key."""
    model = pipeline.model
    if model is None:
        raise NotReady("no model loaded yet")
    meta = model.bundle.meta
    overall = meta.eval_metrics.get(model.precision, {}).get("overall", {})
    admin = settings.admin_api_key is not None and bearer_matches(request.scope, settings.admin_api_key)
    return {
        "model_id": meta.model_id,
        "base_model": meta.base_model,
        "architecture": meta.architecture,
        "bundle_name": model.bundle.path.name,
        "bundle": str(model.bundle.path) if admin else None,
        "precision": model.precision,
        "precision_reason": model.precision_reason,
        "precisions_available": meta.precisions,
        "provider": model.provider,
        "reference_check": model.reference.to_dict() if model.reference else None,
        "formatting": meta.formatting.kind,
        "reward_head": meta.reward_head or None,  # family, pooling, where the reward is read (bundles from v2 on)
        "objectives": meta.objectives or None,
        "weights": dict(zip(meta.objectives, weight_vector(meta).tolist(), strict=True)) if meta.objectives else None,
        "max_length": meta.formatting.max_length,
        "batching": {
            "max_batch_tokens": model.max_batch_tokens,
            "max_batch_size": model.max_batch_size,
            "max_wait_ms": model.max_wait_ms,
            "max_padding": model.max_padding,
            "max_queue_pairs": settings.max_queue_pairs,
            "max_queue_seconds": settings.max_queue_seconds,
            "expected_wait_seconds": round(model.batcher.expected_wait(), 3),
            "inference_workers": settings.inference_workers,
        },
        "limits": {
            "max_items_per_request": settings.max_items_per_request,
            "max_chars_per_text": settings.max_chars_per_text,
            "max_body_bytes": settings.max_body_bytes,
        },
        "normalization": dict(zip(("mean", "std"), model.normalizer, strict=True)) if model.normalizer else None,
        "normalize_default": model.normalize_default,
        "eval_accuracy": overall.get("accuracy") if isinstance(overall.get("accuracy"), float) else None,
        "auth": settings.api_key is not None,
        "version": request.app.version,
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "Prometheus"}},
)
async def metrics(registry: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
