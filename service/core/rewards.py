"""The reward of a request under the live recipe: the model batch and every verifier component run concurrently, each
sample's components are combined by the recipe's weights, and each component is reported (value and failure).

Without a recipe the service rewards with the model alone, exactly as before. The verifier worker pool and the code
sandbox outlive recipes (a reload swaps the recipe, not the workers); verifier work is admitted against the same time
limit as model work (RM_MAX_QUEUE_SECONDS) and refused with 429 likewise.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .components import REGISTRY, Batch, Component, Sample, Tools, specs
from .errors import InvalidInput, Overloaded
from .metrics import Metrics
from .pipeline import ScoreResult, ScoringJob
from .recipe import Recipe, load_recipe
from .settings import Settings
from .verifiers.pool import Outcome, WorkerPool
from .verifiers.sandbox import Limits, Sandbox

log = logging.getLogger("service.rewards")
POOLED = ("math", "format")  # kinds whose work runs in the worker pool


@dataclass(frozen=True)
class Rewards:
    """One request's rewards: the combined reward per sample (None where a component failed with `on_failure: null`),
    each component's values and failures by name, and the model's own result (None without a model component)."""

    scores: list[float | None]
    components: dict[str, list[float | None]]
    failures: dict[str, list[str | None]]
    model: ScoreResult | None


class Verifiers:
    """The worker pool and the sandbox, started when a recipe first needs them and kept across recipes."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool: WorkerPool | None = None
        self.sandbox: Sandbox | None = None
        self.seconds_per_task = 0.05  # moving average, for admission by expected wait (a first guess until measured)

    async def ready_for(self, recipe: Recipe) -> None:
        kinds = {c.kind for c in recipe.components}
        if kinds & set(POOLED) and self.pool is None:
            pool = WorkerPool(
                self.settings.verifier_workers, self.settings.verifier_memory_mb, self.metrics.sandbox_kills.inc
            )
            await pool.start()
            self.pool = pool
            self.metrics.verifier_workers.set_function(lambda: pool.size)
            self.metrics.verifier_busy.set_function(lambda: pool.busy)
        if "code" in kinds and self.sandbox is None:
            accept = self.settings.sandbox == "limits-only"
            self.sandbox = await asyncio.to_thread(Sandbox.detect, accept, self.settings.sandbox_slots, Limits())
            if self.sandbox.mode == "limits-only":
                log.warning(
                    "code verifiers run WITHOUT isolation (RM_SANDBOX=limits-only): policy code sees this machine's "
                    "files and network, limited only in CPU time, memory, processes and file size"
                )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class Rewarder:
    """The live recipe's components, ready to score."""

    def __init__(self, recipe: Recipe, verifiers: Verifiers, count_tokens: Callable[[str], int] | None) -> None:
        self.recipe = recipe
        self.verifiers = verifiers
        self.metrics = verifiers.metrics
        tools = Tools(verifiers.pool, verifiers.sandbox, count_tokens)
        self.components: list[Component] = [REGISTRY[c.kind](c, tools) for c in recipe.components]
        self.pending = 0  # samples of verifier work admitted and not yet answered

    @classmethod
    async def load(cls, path: str, verifiers: Verifiers, count_tokens: Callable[[str], int] | None) -> Rewarder:
        recipe = await asyncio.to_thread(load_recipe, path, specs())
        await verifiers.ready_for(recipe)
        return cls(recipe, verifiers, count_tokens)

    def describe(self) -> dict[str, Any]:
        """/info's view of the recipe."""
        return {
            "source": self.recipe.source,
            "budget_seconds": self.recipe.budget_seconds,
            "components": [c.spec.model_dump(exclude_none=True) for c in self.components],
            "sandbox": self.verifiers.sandbox.mode if self.verifiers.sandbox else None,
            "verifier_workers": self.verifiers.pool.size if self.verifiers.pool else 0,
        }

    def _admit(self, samples: int) -> None:
        """429 when the verifier work already admitted, and this request's, would wait past RM_MAX_QUEUE_SECONDS."""
        settings = self.verifiers.settings
        verifying = sum(1 for c in self.components if c.spec.kind != "model")
        if not verifying or not settings.max_queue_seconds:
            return
        workers = max(1, self.verifiers.pool.size if self.verifiers.pool else settings.sandbox_slots)
        wait = (self.pending + samples) * verifying * self.verifiers.seconds_per_task / workers
        if self.pending and wait > settings.max_queue_seconds:
            retry = max(1, math.ceil(wait - settings.max_queue_seconds))
            raise Overloaded(
                f"the verifiers would need about {wait:.0f} s for these samples behind {self.pending} others, over "
                f"the limit of {settings.max_queue_seconds:g} s (RM_MAX_QUEUE_SECONDS); retry in {retry} s",
                retry_after=retry,
            )

    async def reward(
        self,
        job: ScoringJob,
        score_model: Callable[[], Awaitable[ScoreResult]] | None,
        normalize: bool | None,
        weights: dict[str, float] | None,
    ) -> Rewards:
        labels = job.labels or [None] * len(job.prompts)
        samples = [Sample(p, c, r) for p, c, r in zip(job.prompts, job.completions, labels, strict=True)]
        self._admit(len(samples))
        model_task = asyncio.ensure_future(score_model()) if self.recipe.needs_model and score_model else None
        batch = Batch(samples, time.monotonic() + self.recipe.budget_seconds, normalize=normalize, weights=weights)
        self.pending += len(samples)
        try:
            verified = await asyncio.gather(*(self._timed(c, batch) for c in self.components if c.spec.kind != "model"))
            model_result = await model_task if model_task is not None else None
        except BaseException:
            if model_task is not None:
                model_task.cancel()
            raise
        finally:
            self.pending -= len(samples)
        batch.model = model_result
        by_component: dict[str, list[Outcome]] = {}
        verified_iter = iter(verified)
        for component in self.components:
            if component.spec.kind == "model":
                try:
                    by_component[component.spec.label] = await component.score(batch)
                except ValueError as e:
                    raise InvalidInput(f"model component: {e}") from None
            else:
                by_component[component.spec.label] = next(verified_iter)
        rewards = self._combine(by_component, len(samples), model_result)
        self.metrics.drift.record_components(rewards.components)
        return rewards

    async def _timed(self, component: Component, batch: Batch) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = await component.score(batch)
        elapsed = time.perf_counter() - started
        label = component.spec.label
        self.metrics.component_latency.labels(label).observe(elapsed)
        if batch.samples:
            per = elapsed / len(batch.samples)
            self.verifiers.seconds_per_task += 0.1 * (per - self.verifiers.seconds_per_task)
        for outcome in outcomes:
            if outcome.failure is not None:
                kind = outcome.failure.split(":")[0]
                self.metrics.component_failures.labels(label, kind).inc()
        return outcomes

    def _combine(self, by_component: dict[str, list[Outcome]], n: int, model: ScoreResult | None) -> Rewards:
        components: dict[str, list[float | None]] = {}
        failures: dict[str, list[str | None]] = {}
        scores: list[float | None] = [0.0] * n
        for component in self.components:
            spec, outcomes = component.spec, by_component[component.spec.label]
            values = [o.value if o.failure is None else spec.on_failure for o in outcomes]
            components[spec.label] = values
            failures[spec.label] = [o.failure for o in outcomes]
            for i, value in enumerate(values):
                current = scores[i]
                scores[i] = None if value is None or current is None else current + spec.weight * value
        return Rewards(scores, components, failures, model)


class RecipeSlot:
    """Holds the live recipe (None: the model alone); a reload swaps it, the verifier workers stay."""

    def __init__(self, verifiers: Verifiers, count_tokens: Callable[[str], int] | None) -> None:
        self.verifiers = verifiers
        self.count_tokens = count_tokens
        self.live: Rewarder | None = None

    async def load(self, path: str) -> Rewarder:
        """Read, validate and ready a recipe (RecipeError or ValueError if it cannot serve), then swap it in."""
        rewarder = await Rewarder.load(path, self.verifiers, self.count_tokens)
        self.live = rewarder
        log.info("reward recipe %s: %s", path, ", ".join(c.spec.label for c in rewarder.components))
        return rewarder
