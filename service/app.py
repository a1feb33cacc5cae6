"""create_app(settings): the FastAPI app and its lifespan — load the bundle, warm up, serve, drain on stop."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.serving import Served

from . import errors, routes, tei, vllm
from .lifecycle import Lifecycle
from .metrics import Metrics
from .pipeline import Pipeline
from .settings import Settings

log = logging.getLogger("service.app")
ENDPOINTS = {"/score", "/compare", "/get_reward", "/healthz", "/readyz", "/info", "/metrics", "/admin/reload"}
ENDPOINTS |= {"/pooling", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank", "/predict"}  # vLLM's and TEI's


def service_version() -> str:
    try:
        return version("rlhf-reward")
    except PackageNotFoundError:
        return "0+unknown"


class BodyLimit:
    """Pure ASGI middleware: bodies over the limit get a JSON 413, whether declared up front or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = f"request body of {int(declared)} bytes is over the limit of {self.max_bytes}"
            await errors.error_response(errors.path_dialect(scope["path"]), 413, "too_large", message)(
                scope, receive, send
            )
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # An HTTPException raised while FastAPI reads the body reaches our JSON handlers as a 413.
                raise HTTPException(413, f"request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


class RequestMetrics:
    """Pure ASGI middleware: requests by endpoint and status, and their latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500
        started = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)


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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = await pipeline.load(str(settings.model_dir), opened)
        log.info("serving %s (%s: %s, %s)", model.model_id, model.precision, model.precision_reason, model.provider)
        lifecycle.ready()
        try:
            yield
        finally:
            lifecycle.stop()
            await pipeline.close()
            lifecycle.stopped()

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
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(vllm.router)
    app.include_router(tei.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
