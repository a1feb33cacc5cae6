"""create_app(settings): the FastAPI app and its lifespan — load the bundle, warm up, serve, drain on stop."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI

from models.serving import Served

from . import errors, routes, tei, vllm
from .lifecycle import Lifecycle
from .metrics import Metrics
from .middleware import Admission, Auth, BodyLimit, CatchAll, RequestMetrics
from .pipeline import Pipeline
from .settings import Settings

log = logging.getLogger("service.app")


def service_version() -> str:
    try:
        return version("rlhf-reward")
    except PackageNotFoundError:
        return "0+unknown"


def with_objectives(schema: dict[str, Any], objectives: tuple[str, ...] | None) -> dict[str, Any]:
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


def create_app(settings: Settings, opened: Served | None = None) -> FastAPI:
    """The app; `opened` is the bundle `python -m service` already opened and checked (else the lifespan opens it)."""
    metrics = Metrics()
    pipeline = Pipeline(settings, metrics)
    lifecycle = Lifecycle()
    running: list[asyncio.AbstractEventLoop] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running.append(asyncio.get_running_loop())
        model = await pipeline.load(str(settings.model_dir), opened)
        log.info("serving %s (%s: %s, %s)", model.model_id, model.precision, model.precision_reason, model.provider)
        lifecycle.ready()
        try:
            yield
        finally:
            lifecycle.stop()
            await pipeline.close()
            lifecycle.stopped()

    def stop() -> None:
        """Refuse new work and start the drain's deadline now (callable from any thread, e.g. a signal handler):
        the server waits for open requests only after it, and must find them answered by then."""
        lifecycle.stop()
        if running:
            running[0].call_soon_threadsafe(lambda: asyncio.ensure_future(pipeline.close()))

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
        model = pipeline.model
        key = tuple(model.bundle.meta.objectives) if model is not None else None
        if key not in published:
            published[key] = with_objectives(copy.deepcopy(static_openapi()), key)
        return published[key]

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.pipeline = pipeline
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle
    app.state.stop = stop
    errors.install(app)
    routers = (routes.router, vllm.router, tei.router)
    for router in routers:
        app.include_router(router)
    endpoints = frozenset(getattr(route, "path", "") for router in routers for route in router.routes)
    # Outermost last: CatchAll > RequestMetrics > Auth > Admission > BodyLimit > the routes.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, read_seconds=settings.body_timeout_seconds)
    app.add_middleware(Admission, refusal=pipeline.refusal)
    app.add_middleware(Auth, api_key=settings.api_key, admin_key=settings.admin_api_key)
    # Requests are counted by the route that took them (any other path is "other", so label values stay bounded).
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=endpoints)
    app.add_middleware(CatchAll)
    return app
