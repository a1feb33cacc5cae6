"""OpenRLHF's remote reward protocol (`--reward.remote_url`): POST /get_reward, `{"query", "prompts", "labels"}` ->
`{"rewards", "scores", "extra_logs"}`. How each query becomes the reward model's pair is service.protocols.rollouts';
a conversation the reward model's chat template refuses is rewritten there (a legitimate rollout never gets a 4xx).
Errors are in our dialect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from ..core.pipeline import ScoreResult, ScoringJob
from ..web.bodies import BoundedJSONRoute
from ..web.deps import AcceptingPipeline
from .common import json_response, no_lone_surrogates, until_disconnect
from .native import ERRORS
from .rollouts import RewardPair, repairs, to_pair

PATHS = ("/get_reward",)
router = APIRouter(route_class=BoundedJSONRoute)


class RewardRequest(BaseModel):
    """OpenRLHF's request: the policy's decoded prompt + response per sample, and its prompt."""

    model_config = ConfigDict(extra="ignore")  # OpenRLHF may send more fields

    query: list[StrictStr] = Field(
        description="The policy's prompt + response, decoded with its special tokens (an empty list gets empty lists "
        "back)."
    )
    prompts: list[StrictStr] | None = Field(
        None,
        description="Each query's prompt. The response starts where the prompt ends in the query (or where the "
        "longest suffix of a left-truncated prompt does); a query without one (the list is shorter) is split at its "
        "chat markup or last assistant turn, else scored whole.",
    )
    labels: list[Any] | None = Field(
        None,
        description="Each sample's label (OpenRLHF's `--label_key` column): the reference the reward recipe's "
        "verifiers check against (a math answer, code tests). Ignored without a recipe.",
    )
    normalize: StrictBool | None = Field(None, description="As in /score (default: RM_NORMALIZE).")

    @field_validator("query", "prompts")
    @classmethod
    def _check_strings(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else [no_lone_surrogates(v) for v in values]

    def reward_pairs(self) -> list[RewardPair]:
        """How each query splits, and into what."""
        prompts = self.prompts or []
        return [to_pair(q, prompts[i] if i < len(prompts) else None) for i, q in enumerate(self.query)]


def job_of(body: RewardRequest, pairs: list[RewardPair]) -> ScoringJob:
    names = [f"query.{i}" for i in range(len(pairs))]
    texts: list[tuple[str, Any]] = [(f"query.{i}", q) for i, q in enumerate(body.query)]
    given = body.labels or []
    labels: list[object] = [given[i] if i < len(given) else None for i in range(len(pairs))]
    return ScoringJob([p.prompt for p in pairs], [p.completion for p in pairs], names, texts, labels, repairs)


class RewardResponse(BaseModel):
    rewards: list[float] = Field(description="One reward per query (normalised when asked).")
    scores: list[float] = Field(description="The same values (OpenRLHF reads `scores`, then `rewards`).")
    extra_logs: dict[str, list[float]] = Field(
        description="Numbers OpenRLHF logs per sample: `raw_reward` (before normalising) and `truncated` (1 when the "
        "pair was cut to the model's max length)."
    )


@router.post("/get_reward", response_model=RewardResponse, responses=ERRORS)
async def get_reward(body: RewardRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """OpenRLHF's remote reward protocol, so its trainers work unchanged with --reward.remote_url. A conversation the
    reward model's chat template refuses is rewritten until it formats (a legitimate rollout never gets a 4xx)."""
    pairs = body.reward_pairs()
    job = job_of(body, pairs)
    rewarder = request.app.state.recipes.live
    if rewarder is None:
        result: ScoreResult | None = await until_disconnect(request, pipeline.score(job))
        assert result is not None
        rewards: list[float | None] = list(result.values(body.normalize))
        components: dict[str, list[float | None]] = {}
    else:
        composed = await until_disconnect(
            request, rewarder.reward(job, lambda: pipeline.score(job), body.normalize, None)
        )
        result, rewards, components = composed.model, composed.scores, composed.components
    extra: dict[str, list[float]] = {}
    if result is not None:
        for pair, repair in zip(pairs, result.repairs, strict=True):
            pipeline.metrics.openrlhf_splits.labels(pair.how, pair.markup, repair).inc()
        # Per-objective rewards go into extra_logs, so OpenRLHF logs each head beside the combined reward.
        extra = {"raw_reward": result.raw.tolist(), "truncated": result.truncated_mask.astype(float).tolist()}
        extra |= result.objectives()
    # OpenRLHF needs a number per sample: a reward a failed component left null is 0 here, and each component is
    # logged by name (a failed one with its on_failure value, 0 when that is null).
    extra |= {name: [0.0 if v is None else v for v in values] for name, values in components.items()}
    numbers = [0.0 if r is None else r for r in rewards]
    return json_response({"rewards": numbers, "scores": numbers, "extra_logs": extra})
