"""Typed FastAPI dependencies: the app's settings, lifecycle, metrics, model slot, recipe slot and pipeline (keys are
checked before the body is read, in web.middleware.Auth).

All async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off every request would pay.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..core.lifecycle import Lifecycle
from ..core.metrics import Metrics
from ..core.models import ModelSlot
from ..core.pipeline import Pipeline
from ..core.rewards import RecipeSlot
from ..core.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_models(request: Request) -> ModelSlot:
    models: ModelSlot = request.app.state.models
    return models


async def get_recipes(request: Request) -> RecipeSlot:
    recipes: RecipeSlot = request.app.state.recipes
    return recipes


async def accepting_pipeline(request: Request) -> Pipeline:
    """The pipeline, if the server takes new scoring work now (else 503)."""
    lifecycle: Lifecycle = request.app.state.lifecycle
    lifecycle.check_accepting()
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


SettingsDep = Annotated[Settings, Depends(get_settings)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelsDep = Annotated[ModelSlot, Depends(get_models)]
RecipesDep = Annotated[RecipeSlot, Depends(get_recipes)]
AcceptingPipeline = Annotated[Pipeline, Depends(accepting_pipeline)]
