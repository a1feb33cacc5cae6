"""Pipeline without HTTP: the path every endpoint takes (limits, tokenising, repeats, the queue, reloads)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from models.bundle import read_bundle
from models.runtime import BundleScorer
from service.core.errors import Overloaded, TooLarge
from service.core.metrics import Metrics
from service.core.models import ModelSlot
from service.core.pipeline import Pipeline
from service.core.settings import Settings
from service.protocols.native_shapes import CompareRequest, ScoreRequest


def run(settings: Settings, work: object) -> object:
    async def main() -> object:
        metrics = Metrics()
        models = ModelSlot(settings, metrics)
        pipeline = Pipeline(settings, metrics, models)
        await models.load(str(settings.model_dir))
        try:
            return await work(pipeline)  # type: ignore[operator]
        finally:
            await models.close()
            pipeline.close()

    return asyncio.run(main())


def test_scores_equal_the_offline_scorer_and_repeats_run_once(tiny_bundle: Path) -> None:
    prompts = ["Question 1: tea?", "Question 1: tea?", "Question 2: maps?", "Question 1: tea?"]
    completions = ["tea is kind.", "tea is rude.", "maps is clear.", "tea is kind."]  # the last repeats the first
    request = ScoreRequest(items=[{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)])
    settings = Settings(model_dir=tiny_bundle, precision="fp32")

    async def work(pipeline: Pipeline) -> tuple[list[float], float, int]:
        result = await pipeline.score(request.job())
        live = pipeline.models.live
        assert live is not None
        return result.raw.tolist(), pipeline.metrics.repeats._value.get(), live.batcher.depth

    scores, repeats, depth = run(settings, work)  # type: ignore[misc]
    want = BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu").score(prompts, completions)
    assert np.array_equal(np.asarray(scores, dtype=np.float32), want)
    assert repeats == 1 and depth == 0  # nothing reserved is left behind


def test_limits_and_overload_are_refused_before_any_work(tiny_bundle: Path) -> None:
    settings = Settings(
        model_dir=tiny_bundle, precision="fp32", max_chars_per_text=50, max_queue_pairs=4, max_items_per_request=4
    )
    long = CompareRequest(prompt="p", completions=["short", "x" * 51])
    too_many = CompareRequest(prompt="p", completions=["a", "b", "c", "d", "e"])

    async def work(pipeline: Pipeline) -> None:
        with pytest.raises(TooLarge, match=r"completions\.1: 51 characters"):
            await pipeline.score(long.job())
        with pytest.raises(TooLarge, match="5 items"):
            await pipeline.score(too_many.job())
        live = pipeline.models.live
        assert live is not None
        # Another request holds most of the queue.
        with live.batcher.reserve(3), pytest.raises(Overloaded):
            await pipeline.score(CompareRequest(prompt="p", completions=["a", "b"]).job())
        result = await pipeline.score(CompareRequest(prompt="p", completions=["a", "b"]).job())  # room again
        assert len(result.raw) == 2 and live.batcher.depth == 0

    run(settings, work)
