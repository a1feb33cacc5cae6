"""OpenRLHF's remote reward protocol (`--reward.remote_url`): POST /get_reward, `{"query", "prompts", "labels"}` ->
`{"rewards", "scores", "extra_logs"}`. How each query becomes the reward model's pair is service.protocols.rollouts';
a conversation the reward model's chat template refuses is rewritten there (a legitimate rollout never gets a 4xx).
Errors are in our dialect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from ..core.pipeline import ScoringJob
from ..web.bodies import BoundedJSONRoute
from ..web.deps import AcceptingPipeline
from .common import json_response, no_lone_surrogates, until_disconnect
from .native import ERRORS
from .rollouts import RewardPair, repairs, to_pair

PATHS = ("/get_reward",)
router = APIRouter(route_class=BoundedJSONRoute)


class RewardRequest(BaseModel):
    """OpenRLHF's request: the policy's decoded prompt + response per sample, and its prompt."""

    model_config = ConfigDict(extra="ignore")  # OpenRLHF also sends fields such as `labels`

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
    return ScoringJob([p.prompt for p in pairs], [p.completion for p in pairs], names, texts, repair=repairs)


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
    result = await until_disconnect(request, pipeline.score(job_of(body, pairs)))
    for pair, repair in zip(pairs, result.repairs, strict=True):
        pipeline.metrics.openrlhf_splits.labels(pair.how, pair.markup, repair).inc()
    rewards = result.values(body.normalize)
    # Per-objective rewards go into extra_logs, so OpenRLHF logs each head beside the combined reward.
    extra = {"raw_reward": result.raw.tolist(), "truncated": result.truncated_mask.astype(float).tolist()}
    extra |= result.objectives()
    return json_response({"rewards": rewards, "scores": rewards, "extra_logs": extra})
