"""Our own dialect: POST /compare, the handler of our POST /score bodies (the route is service.protocols.shared's,
which also takes vLLM's at that path), and how our errors are written: `{"error", "type", "field"?, "details"?}` with
the status of each kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..core.errors import Kind
from ..core.pipeline import Pipeline, ScoreResult
from ..web.bodies import BoundedJSONRoute
from ..web.deps import AcceptingPipeline
from ..web.dialects import Failure, field_of
from .common import STATUS, json_response, until_disconnect
from .native_shapes import CompareRequest, CompareResponse, ErrorResponse, ScoreRequest

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "Body that is not UTF-8 text"),
        (401, "Missing or wrong API key"),
        (408, "The body did not arrive within RM_BODY_TIMEOUT_SECONDS"),
        (413, "Too many items, a text over the character limit, or a body over the size limit"),
        (422, "Malformed request; `error` names the field"),
        (429, "Overloaded: the request would wait longer than RM_MAX_QUEUE_SECONDS; retry after `Retry-After` seconds"),
        (500, "Inference failed for the batch this request was in"),
        (503, "Not ready (loading, warming up or draining; retry after `Retry-After` seconds)"),
    ]
}
router = APIRouter(route_class=BoundedJSONRoute)


class Native:
    """Our error dialect."""

    name = "native"

    def render(self, failure: Failure) -> JSONResponse:
        kind = Kind.INVALID if failure.kind is Kind.VALIDATION else failure.kind
        body: dict[str, Any] = {"error": failure.message, "type": kind.value}
        if failure.field is not None:
            body["field"] = failure.field
        if failure.details is not None:
            body["details"] = failure.details
        return JSONResponse(body, failure.status or STATUS[failure.kind], headers=dict(failure.headers))

    def validation(self, errors: Sequence[Mapping[str, Any]]) -> Failure:
        details = [{"field": field_of(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in errors]
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        return Failure(Kind.VALIDATION, f"{first['field']}: {first['message']}", details=details)


DIALECT = Native()


def with_objectives(result: ScoreResult) -> dict[str, Any]:
    """`objectives` for a multi-objective model; nothing for one reward, whose answers stay as they always were."""
    objectives = result.objectives()
    return {"objectives": objectives} if objectives else {}


async def score(body: ScoreRequest, request: Request, pipeline: Pipeline) -> Response:
    """Our POST /score: rewards in the order given — the model's, or the reward recipe's components combined."""
    job = body.job()
    rewarder = request.app.state.recipes.live
    if rewarder is None:
        result = await until_disconnect(request, pipeline.score(job))
        answer = {"scores": result.values(body.normalize, body.weights), "model": result.model.model_id}
        return json_response(answer | {"truncated": result.truncated} | with_objectives(result))
    rewards = await until_disconnect(
        request, rewarder.reward(job, lambda: pipeline.score(job), body.normalize, body.weights)
    )
    model = rewards.model
    composed: dict[str, Any] = {
        "scores": rewards.scores,
        "model": model.model.model_id if model else None,
        "truncated": model.truncated if model else 0,
    }
    extra = with_objectives(model) if model else {}
    return json_response(composed | extra | {"components": rewards.components, "failures": rewards.failures})


@router.post("/compare", response_model=CompareResponse, responses=ERRORS)
async def compare(body: CompareRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """Rank two or more completions of one prompt, with Bradley–Terry win probabilities."""
    result = await until_disconnect(request, pipeline.score(body.job()))
    raw = np.asarray(result.values(False, body.weights), dtype=np.float64)
    ranking = sorted(range(len(raw)), key=lambda i: -raw[i])  # stable: ties keep input order
    probabilities = 1.0 / (1.0 + np.exp(-(raw[:, None] - raw[None, :])))
    return json_response(
        {
            "scores": result.values(body.normalize, body.weights),
            "ranking": ranking,
            "probabilities": probabilities.tolist(),
            "model": result.model.model_id,
            "truncated": result.truncated,
        }
        | with_objectives(result)
    )
