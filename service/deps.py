"""Typed FastAPI dependencies: the app's settings, lifecycle and pipeline, and the API key check.

All async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off every request would pay.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from .errors import Forbidden, Unauthorized
from .lifecycle import Lifecycle
from .metrics import Metrics
from .pipeline import Pipeline
from .settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


async def accepting_pipeline(request: Request) -> Pipeline:
    """The pipeline, if the server takes new scoring work now (else 503)."""
    lifecycle: Lifecycle = request.app.state.lifecycle
    lifecycle.check_accepting()
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _check_bearer(request: Request, key: SecretStr, what: str) -> None:
    """401 unless the request carries `key` as a bearer token; compared in constant time."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.get_secret_value().encode()):
        raise Unauthorized(
            f"missing or invalid {what} (send 'Authorization: Bearer KEY')", headers={"WWW-Authenticate": "Bearer"}
        )


async def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is not None:
        _check_bearer(request, key, "API key")


async def require_admin_key(request: Request) -> None:
    """Admin actions need their own key; without one configured they are off, whatever the scoring key."""
    key = request.app.state.settings.admin_api_key
    if key is None:
        raise Forbidden("admin endpoints are disabled on this server (set RM_ADMIN_API_KEY to enable them)")
    _check_bearer(request, key, "admin key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
AcceptingPipeline = Annotated[Pipeline, Depends(accepting_pipeline)]
ApiKey = Depends(require_api_key)
AdminKey = Depends(require_admin_key)
