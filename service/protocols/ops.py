"""Our operations endpoints: liveness, readiness, what is served (/info), Prometheus metrics, and /admin/reload (behind
the admin key, checked in web.middleware.Auth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.objectives import weight_vector

from ..core.errors import NotReady, ReloadRefused
from ..core.lifecycle import Phase
from ..core.models import ModelSlot
from ..core.rewards import RecipeSlot
from ..core.settings import Settings
from ..web.bodies import BoundedJSONRoute
from ..web.deps import LifecycleDep, MetricsDep, ModelsDep, RecipesDep, SettingsDep
from ..web.middleware import bearer_matches
from .native import ERRORS
from .native_shapes import ErrorResponse, ReloadRequest, ReloadResponse

router = APIRouter(route_class=BoundedJSONRoute)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=ERRORS | {403: {"model": ErrorResponse, "description": "Admin endpoints disabled (no RM_ADMIN_API_KEY)"}},
)
async def reload(
    models: ModelsDep,
    recipes: RecipesDep,
    lifecycle: LifecycleDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    body: ReloadRequest | None = None,
) -> dict[str, Any]:
    """Load a bundle beside the live one, warm it up, then swap it in; a broken bundle is refused and the old
    model keeps serving. Requests in flight finish on the model they started with. Only bundles inside the model
    root (RM_MODEL_ROOT) load; a relative `model_dir` is taken from there. `reward_recipe` swaps the reward recipe
    (alone: the model stays); an empty body reloads the configured bundle and recipe."""
    lifecycle.check_accepting()
    try:
        return await _reload(models, recipes, settings, body)
    except ReloadRefused:
        metrics.reload_failures.inc()  # what the reload alert watches (a counter present from the start)
        raise


async def _reload(
    models: ModelSlot, recipes: RecipeSlot, settings: Settings, body: ReloadRequest | None
) -> dict[str, Any]:
    previous = models.live.model_id if models.live else None
    model_dir = body.model_dir if body else None
    recipe = body.reward_recipe if body else None
    if model_dir is None and recipe is None:
        model_dir = str(settings.model_dir) if settings.model_dir else None
        recipe = str(settings.reward_recipe) if settings.reward_recipe else None
    answer: dict[str, Any] = {"model_id": previous, "previous_model_id": previous, "bundle": None}
    if model_dir is not None:
        target = _inside(model_dir, settings, previous, "model_dir")
        try:
            new = await models.load(str(target))
        except Exception as e:  # BundleError, or an ONNX graph the runtime cannot load
            raise ReloadRefused(f"reload refused, still serving {previous}: {e}") from e
        answer |= {"model_id": new.model_id, "bundle": str(new.bundle.path)}
    if recipe is not None:
        try:
            loaded = await recipes.load(str(_inside(recipe, settings, previous, "reward_recipe")))
        except ReloadRefused:
            raise
        except Exception as e:  # RecipeError, a sandbox that cannot run: the old recipe keeps serving
            raise ReloadRefused(f"reload refused, the recipe stays as it was: {e}", field="reward_recipe") from e
        answer["reward_recipe"] = loaded.recipe.source
    return answer


def _inside(path: str, settings: Settings, previous: str | None, field: str) -> Path:
    target = reload_target(path, settings.reload_root)
    if target is None:
        # Said the same way whether or not the path exists: the answer reveals nothing outside the root.
        raise ReloadRefused(
            f"reload refused, still serving {previous}: {field} must name a path inside the model root (RM_MODEL_ROOT)",
            field=field,
        )
    return target


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
async def readyz(lifecycle: LifecycleDep, models: ModelsDep) -> dict[str, str | None]:
    """Bundle (and reward recipe) loaded and warmed up, and not draining."""
    if lifecycle.draining:
        raise NotReady("draining")
    if lifecycle.phase is Phase.STARTING:
        raise NotReady("loading or warming up")
    return {"status": "ready", "model": models.live.model_id if models.live else None}


@router.get("/info", responses={503: {"model": ErrorResponse}})
async def info(
    request: Request, models: ModelsDep, recipes: RecipesDep, settings: SettingsDep, registry: MetricsDep
) -> dict[str, Any]:
    """What is being served and how, and the reward-drift signals over the last scored pairs. The bundle's folder on
    disk is shown only with the admin key."""
    recipe = recipes.live.describe() if recipes.live else None
    model = models.live
    if model is None:
        if recipe is None:
            raise NotReady("no model loaded yet")
        return {"model_id": None, "reward_recipe": recipe, "version": request.app.version}  # verifier-only
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
        "truncation": meta.formatting.truncation,  # which prompt tokens an over-long pair keeps (schema 3)
        # family, pooling, where the reward is read (bundles from v2 on)
        "reward_head": meta.reward_head.to_dict() if meta.reward_head else None,
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
        "normalization": model.stats.overall.to_dict() if model.stats else None,
        "normalize_default": model.normalize_default,
        "eval_accuracy": overall.get("accuracy") if isinstance(overall.get("accuracy"), float) else None,
        "auth": settings.api_key is not None,
        "reward_recipe": recipe,
        "drift": registry.drift.info() if registry.drift.enabled else None,
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
