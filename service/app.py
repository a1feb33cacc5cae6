"""create_app(settings): the core (model slot, pipeline, lifecycle, metrics), each protocol registered explicitly with
its router and error dialect, and the middleware; the lifespan loads the bundle, warms up, serves, drains on stop."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI

from models.serving import CheckedScorer

from .core.lifecycle import Lifecycle, Phase
from .core.metrics import Metrics
from .core.models import ModelSlot
from .core.pipeline import Pipeline
from .core.rewards import RecipeSlot, Verifiers
from .core.settings import Settings
from .protocols import native, openrlhf, ops, shared, tei, vllm
from .protocols.common import SHARED_PATHS, shared_dialect
from .web.dialects import Dialect, Dialects, install
from .web.middleware import Admission, Auth, BodyLimit, CatchAll, RequestMetrics

log = logging.getLogger("service.app")


def service_version() -> str:
    try:
        return version("rlhf-reward")
    except PackageNotFoundError:
        return "0+unknown"


def narrow_weights(schema: dict[str, Any], objectives: tuple[str, ...] | None) -> dict[str, Any]:
    """Narrow every request's `weights` to the objective names the loaded model has (none for one reward), so a
    body the schema accepts is one the service accepts; unchanged while no model is loaded."""
    if objectives is None:
        return schema
    for model in schema.get("components", {}).get("schemas", {}).values():
        weights = model.get("properties", {}).get("weights", {})
        for option in weights.get("anyOf", []):
            if option.get("type") == "object":
                if objectives:
                    option["propertyNames"] = {"enum": list(objectives)}
                else:
                    option["maxProperties"] = 0
    return schema


def dialects() -> Dialects:
    """Every path's error dialect: ours by default, vLLM's and TEI's on theirs, and the body's on a shared path."""
    by_name: dict[str, Dialect] = {d.name: d for d in (native.DIALECT, vllm.DIALECT, tei.DIALECT)}
    registry = Dialects(native.DIALECT)
    registry.register(vllm.PATHS, vllm.DIALECT)
    registry.register(tei.PATHS, tei.DIALECT)
    for path in SHARED_PATHS:
        registry.share(path, _by_body(path, by_name))
    return registry


def _by_body(path: str, by_name: dict[str, Dialect]) -> Callable[[Any], Dialect]:
    return lambda body: by_name[shared_dialect(path, body)]


def count_tokens(models: ModelSlot) -> Callable[[str], int]:
    """A completion's length in the live reward model's tokens (the length component's unit)."""

    def count(text: str) -> int:
        live = models.live
        if live is None:
            raise ValueError("no model is served to count tokens with")
        return len(live.scorer.formatter.tokenizer.encode(text, add_special_tokens=False).ids)

    return count


def create_app(settings: Settings, opened: CheckedScorer | None = None) -> FastAPI:
    """The app; `opened` is the bundle `python -m service` already opened and checked (else the lifespan opens it)."""
    metrics = Metrics(settings.drift_window)
    models = ModelSlot(settings, metrics)
    pipeline = Pipeline(settings, metrics, models)
    lifecycle = Lifecycle()
    verifiers = Verifiers(settings, metrics)
    recipes = RecipeSlot(verifiers, count_tokens(models) if settings.model_dir is not None else None)
    running: list[asyncio.AbstractEventLoop] = []
    metrics.ready.set_function(lambda: float(lifecycle.phase is Phase.READY))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running.append(asyncio.get_running_loop())
        if settings.model_dir is not None:
            model = await models.load(str(settings.model_dir), opened)
            log.info("serving %s (%s: %s, %s)", model.model_id, model.precision, model.precision_reason, model.provider)
        try:
            if settings.reward_recipe is not None:
                await recipes.load(str(settings.reward_recipe))
            lifecycle.ready()
            yield
        finally:
            lifecycle.stop()
            await models.close()
            pipeline.close()
            await verifiers.close()
            lifecycle.stopped()

    def stop() -> None:
        """Refuse new work and start the drain's deadline now (callable from any thread, e.g. a signal handler):
        the server waits for open requests only after it, and must find them answered by then."""
        lifecycle.stop()
        if running:
            running[0].call_soon_threadsafe(lambda: asyncio.ensure_future(models.close()))

    app = FastAPI(
        title="RLHF reward model service",
        version=service_version(),
        description="Batched ONNX Runtime scoring of prompt/completion pairs for online RLHF.",
        lifespan=lifespan,
        strict_content_type=False,
    )
    static_openapi = app.openapi
    published: dict[tuple[str, ...] | None, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        """The schema, with `weights` naming the live model's objectives (a model with one reward takes none)."""
        live = models.live
        key = tuple(live.bundle.meta.objectives) if live is not None else None
        if key not in published:
            published[key] = narrow_weights(copy.deepcopy(static_openapi()), key)
        return published[key]

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.models = models
    app.state.recipes = recipes
    app.state.pipeline = pipeline
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle
    app.state.stop = stop
    registry = dialects()
    install(app, registry)
    routers = (shared.router, native.router, openrlhf.router, vllm.router, tei.router, ops.router)
    for router in routers:
        app.include_router(router)
    endpoints = frozenset(getattr(route, "path", "") for router in routers for route in router.routes)
    # Outermost last: CatchAll > RequestMetrics > Auth > Admission > BodyLimit > the routes.
    app.add_middleware(
        BodyLimit, dialects=registry, max_bytes=settings.max_body_bytes, read_seconds=settings.body_timeout_seconds
    )
    app.add_middleware(Admission, dialects=registry, refusal=pipeline.refusal)
    app.add_middleware(Auth, dialects=registry, api_key=settings.api_key, admin_key=settings.admin_api_key)
    # Requests are counted by the route that took them (any other path is "other", so label values stay bounded).
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=endpoints)
    app.add_middleware(CatchAll, dialects=registry)
    return app
