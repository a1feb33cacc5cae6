"""Thin HTTP handlers: /score /compare /get_reward and the probes /healthz /readyz /info /metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.formatting import ASSISTANT_MARKER, Text

from .errors import InvalidInput, NotReady, ReloadRefused, Unauthorized
from .schemas import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    Message,
    ReloadRequest,
    ReloadResponse,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
)
from .scorer import Pipeline, ScoreResult

T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (401, "Missing or wrong API key"),
        (413, "Too many items, a text over the character limit, or a body over the size limit"),
        (422, "Malformed request; `error` names the field"),
        (429, "Queue full; retry after `Retry-After` seconds"),
        (503, "Not ready (loading, warming up or draining)"),
    ]
}
router = APIRouter()


def pipeline_of(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    if not request.app.state.ready or request.app.state.stopping:
        raise NotReady("shutting down: not accepting new work" if request.app.state.stopping else "warming up")
    return pipeline


async def require_api_key(request: Request) -> None:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off every request would pay.
    key = request.app.state.settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.get_secret_value().encode()):
        raise Unauthorized(
            "missing or invalid API key (send 'Authorization: Bearer KEY')", headers={"WWW-Authenticate": "Bearer"}
        )


def json_response(payload: dict[str, Any]) -> Response:
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
        raise asyncio.CancelledError("client disconnected")
    return task.result()


def plain(text: str | list[Message]) -> Text:
    return text if isinstance(text, str) else [{"role": m.role, "content": m.content} for m in text]


async def run_scoring(
    request: Request, pipeline: Pipeline, prompts: Sequence[Text], completions: Sequence[Text]
) -> ScoreResult:
    return await until_disconnect(request, pipeline.score(prompts, completions))


ScoringDeps = [Depends(require_api_key)]


@router.post("/score", response_model=ScoreResponse, responses=ERRORS, dependencies=ScoringDeps)
async def score(body: ScoreRequest, request: Request) -> Response:
    """Score many (prompt, completion) pairs; one reward each, in the order given."""
    pipeline = pipeline_of(request)
    prompts = [plain(it.prompt) for it in body.items]
    completions = [plain(it.completion) for it in body.items]
    named = [(f"items.{i}.prompt", p) for i, p in enumerate(prompts)]
    named += [(f"items.{i}.completion", c) for i, c in enumerate(completions)]
    pipeline.check_limits(named, len(body.items))
    result = await run_scoring(request, pipeline, prompts, completions)
    return json_response(
        {"scores": result.values(body.normalize), "model": result.model.model_id, "truncated": result.truncated}
    )


@router.post("/compare", response_model=CompareResponse, responses=ERRORS, dependencies=ScoringDeps)
async def compare(body: CompareRequest, request: Request) -> Response:
    """Rank two or more completions of one prompt, with Bradley–Terry win probabilities."""
    pipeline = pipeline_of(request)
    prompt = plain(body.prompt)
    completions = [plain(c) for c in body.completions]
    named = [("prompt", prompt)] + [(f"completions.{i}", c) for i, c in enumerate(completions)]
    pipeline.check_limits(named, len(completions))
    result = await run_scoring(request, pipeline, [prompt] * len(completions), completions)
    raw = result.raw.astype(np.float64)
    ranking = sorted(range(len(raw)), key=lambda i: -raw[i])  # stable: ties keep input order
    probabilities = 1.0 / (1.0 + np.exp(-(raw[:, None] - raw[None, :])))
    return json_response(
        {
            "scores": result.values(body.normalize),
            "ranking": ranking,
            "probabilities": probabilities.tolist(),
            "model": result.model.model_id,
            "truncated": result.truncated,
        }
    )


def split_query(query: str, prompt: str | None, index: int) -> tuple[str, str]:
    """OpenRLHF sends prompt + response; recover the pair the model was trained on."""
    if prompt is not None:
        if query.startswith(prompt):
            return prompt, query[len(prompt) :]
        stripped = query.lstrip()
        if stripped.startswith(prompt.lstrip()):
            return prompt, stripped[len(prompt.lstrip()) :]
        raise InvalidInput(f"query.{index} does not start with prompts.{index}", field=f"query.{index}")
    cut = query.rfind(ASSISTANT_MARKER)
    if cut >= 0:  # an hh-style transcript: split at the last assistant turn, as training did
        end = cut + len(ASSISTANT_MARKER)
        return query[:end], query[end:]
    return "", query


@router.post("/get_reward", response_model=RewardResponse, responses=ERRORS, dependencies=ScoringDeps)
async def get_reward(body: RewardRequest, request: Request) -> Response:
    """OpenRLHF's remote reward protocol, so its trainers work unchanged with --remote_rm_url."""
    pipeline = pipeline_of(request)
    if body.prompts is not None and len(body.prompts) != len(body.query):
        raise InvalidInput(f"{len(body.prompts)} prompts for {len(body.query)} queries", field="prompts")
    pipeline.check_limits([(f"query.{i}", q) for i, q in enumerate(body.query)], len(body.query))
    pairs = [split_query(q, body.prompts[i] if body.prompts else None, i) for i, q in enumerate(body.query)]
    result = await run_scoring(request, pipeline, [p for p, _ in pairs], [c for _, c in pairs])
    rewards = result.raw.tolist()
    return json_response({"rewards": rewards, "scores": rewards, "extra_logs": {}})


@router.post("/admin/reload", response_model=ReloadResponse, responses=ERRORS, dependencies=ScoringDeps)
async def reload(request: Request, body: ReloadRequest | None = None) -> dict[str, Any]:
    """Load a bundle beside the live one, warm it up, then swap it in; a broken bundle is refused and the old
    model keeps serving. Requests in flight finish on the model they started with."""
    pipeline = pipeline_of(request)
    previous = pipeline.model.model_id if pipeline.model else None
    target = (body.model_dir if body else None) or str(request.app.state.settings.model_dir)
    try:
        new = await pipeline.load(target)
    except Exception as e:  # BundleError, or an ONNX graph the runtime cannot load
        raise ReloadRefused(f"reload refused, still serving {previous}: {e}") from e
    return {"model_id": new.model_id, "previous_model_id": previous, "bundle": str(new.bundle.path)}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
async def readyz(request: Request) -> dict[str, str]:
    """Bundle loaded and warmed up, and not draining."""
    state = request.app.state
    if state.draining:
        raise NotReady("draining")
    if not state.ready or state.pipeline.model is None:
        raise NotReady("loading or warming up")
    return {"status": "ready", "model": state.pipeline.model.model_id}


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    """What is being served and how."""
    state = request.app.state
    model = state.pipeline.model
    if model is None:
        raise NotReady("no model loaded yet")
    meta = model.bundle.meta
    settings = state.settings
    overall = meta.eval_metrics.get(model.precision, {}).get("overall", {})
    return {
        "model_id": meta.model_id,
        "base_model": meta.base_model,
        "architecture": meta.architecture,
        "bundle": str(model.bundle.path),
        "precision": model.precision,
        "precisions_available": meta.precisions,
        "provider": model.provider,
        "reference_check": model.reference.to_dict() if model.reference else None,
        "formatting": meta.formatting.kind,
        "max_length": meta.formatting.max_length,
        "batching": {
            "max_batch_tokens": model.max_batch_tokens,
            "max_batch_size": model.max_batch_size,
            "max_wait_ms": model.max_wait_ms,
            "max_padding": model.max_padding,
            "max_queue_pairs": settings.max_queue_pairs,
            "inference_workers": settings.inference_workers,
        },
        "limits": {
            "max_items_per_request": settings.max_items_per_request,
            "max_chars_per_text": settings.max_chars_per_text,
            "max_body_bytes": settings.max_body_bytes,
        },
        "normalization": dict(zip(("mean", "std"), model.normalizer, strict=True)),
        "eval_accuracy": overall.get("accuracy") if isinstance(overall.get("accuracy"), float) else None,
        "auth": settings.api_key is not None,
        "version": state.version,
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
