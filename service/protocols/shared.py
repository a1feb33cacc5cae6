"""The two paths two protocols share: POST /score (ours or vLLM's) and POST /rerank (TEI's or vLLM's). The body's keys
pick the protocol, by the one table in common.SHARED_PATHS; the request is then answered, errors included, as that
protocol answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, Discriminator, Tag

from ..web.bodies import BoundedJSONRoute
from ..web.deps import AcceptingPipeline
from ..web.dialects import note_dialect
from . import native, tei, vllm
from .common import shared_dialect
from .native_shapes import ErrorResponse, ScoreRequest, ScoreResponse
from .tei import TeiError, TeiRerankRequest
from .vllm_shapes import VllmError, VllmRequest, VllmRerankRequest, VllmScoreRequest, VllmScoreResponse

PATHS = ("/score", "/rerank")


def _chooser(path: str) -> Any:
    """The discriminator of a shared path's body: the tag of the protocol it speaks (a parsed shape says itself)."""

    def tag(body: Any) -> str:
        if isinstance(body, BaseModel):
            return "<vllm>" if isinstance(body, VllmRequest) else f"<{shared_dialect(path, None)}>"
        return f"<{shared_dialect(path, body)}>"

    return tag


ScoreBody = Annotated[
    Annotated[ScoreRequest, Tag("<native>")] | Annotated[VllmScoreRequest, Tag("<vllm>")],
    Discriminator(_chooser("/score")),
]
RerankBody = Annotated[
    Annotated[TeiRerankRequest, Tag("<tei>")] | Annotated[VllmRerankRequest, Tag("<vllm>")],
    Discriminator(_chooser("/rerank")),
]

SCORE_ERRORS: dict[int | str, dict[str, Any]] = native.ERRORS | {
    status: {
        "model": ErrorResponse | VllmError,
        "description": f"ours: {native.ERRORS[status]['description']}; vLLM's: {vllm.ERRORS[status]['description']}",
    }
    for status in vllm.ERRORS
}
RERANK_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "model": TeiError | VllmError if status in vllm.ERRORS else TeiError,
        "description": f"TEI's: {tei.ERRORS[status]['description']}"
        + (f"; vLLM's: {vllm.ERRORS[status]['description']}" if status in vllm.ERRORS else ""),
    }
    for status in tei.ERRORS
} | {500: {"model": VllmError, "description": f"vLLM's: {vllm.ERRORS[500]['description']}"}}

router = APIRouter(route_class=BoundedJSONRoute)


@router.post(
    "/score",
    response_model=ScoreResponse | VllmScoreResponse,
    responses=SCORE_ERRORS,
    dependencies=[Depends(note_dialect)],
)
async def score(body: Annotated[ScoreBody, Body()], request: Request, pipeline: AcceptingPipeline) -> Response:
    """Score many (prompt, completion) pairs; one reward each, in the order given.

    The same path takes vLLM's /score bodies, routed on the body's shape: a JSON object with any of `queries`,
    `documents`, `data_1`, `data_2`, `text_1`, `text_2` is vLLM's (see POST /v1/score) and is answered, errors
    included, as vLLM answers; anything else is ours (`items` of {prompt, completion}, raw rewards)."""
    if isinstance(body, ScoreRequest):
        return await native.score(body, request, pipeline)
    return await vllm.score(body, request, pipeline)


@router.post(
    "/rerank",
    response_model=list[tei.Rank] | vllm.VllmRerankResponse,
    responses=RERANK_ERRORS,
    dependencies=[Depends(note_dialect)],
)
async def rerank(body: Annotated[RerankBody, Body()], request: Request, pipeline: AcceptingPipeline) -> Response:
    """TEI's /rerank, and vLLM's at the same path, routed on the body's shape: a JSON object with `documents` is
    vLLM's (see POST /v1/rerank) and is answered, errors included, as vLLM answers; anything else is TEI's.

    TEI's: each of `texts` is scored as the completion of `query`; a bare list of {index, score} (+ text with
    `return_text`), best first. Scores are σ(reward) unless `raw_scores` is true (the raw reward). Errors are TEI's
    {error, error_type}."""
    if isinstance(body, VllmRerankRequest):
        return await vllm.rerank(body, request, pipeline)
    return await tei.rerank(body, request, pipeline)
