"""vLLM's pooling API (0.34: /pooling, /v1/score, /v1/rerank, /v2/rerank, and its bodies on /score and /rerank) over
the same pipeline, answered and refused as vLLM answers (its shapes: service.protocols.vllm_shapes)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse

from ..core.errors import InvalidInput, Kind
from ..core.pipeline import Pipeline, ScoreResult, ScoringJob
from ..web.bodies import BoundedJSONRoute
from ..web.deps import AcceptingPipeline
from ..web.dialects import Failure, param_of
from .common import STATUS, activated, json_response, status_phrase, until_disconnect
from .vllm_shapes import (
    Pairs,
    PoolingRequest,
    PoolingResponse,
    VllmError,
    VllmRequest,
    VllmRerankRequest,
    VllmRerankResponse,
    VllmScoreRequest,
    VllmScoreResponse,
)

_STATUSES = [
    (
        400,
        "Invalid request: vLLM's BadRequestError, or 'Bad Request' for a body that does not fit the schema; also "
        "our limits (items, characters, body size)",
    ),
    (401, "Missing or wrong API key"),
    (429, "Queue full; retry after `Retry-After` seconds"),
    (500, "Inference failed for the batch this request was in"),
    (503, "Not ready (loading, warming up or draining)"),
]
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": VllmError, "description": d} for s, d in _STATUSES}
# vLLM answers every invalid request 400 (it has no 413 or 422): our limits (413) and checks (422) become 400
# BadRequestError, a failed batch 500 InternalServerError, not ready 503 ServiceUnavailableError; anything else keeps
# its status, typed with its HTTP phrase ("Unauthorized", "Too Many Requests"), as vLLM's HTTP handler does
# (vLLM 0.34 serve/exception_handling).
_TYPES: dict[Kind, tuple[int, str]] = {
    Kind.INVALID_BODY: (400, "BadRequestError"),
    Kind.INVALID: (400, "BadRequestError"),
    Kind.VALIDATION: (400, HTTPStatus.BAD_REQUEST.phrase),  # vLLM types its request validation errors "Bad Request"
    Kind.TOO_LARGE: (400, "BadRequestError"),
    Kind.EMPTY: (400, "BadRequestError"),
    Kind.NOT_READY: (503, "ServiceUnavailableError"),
    Kind.INFERENCE_FAILED: (500, "InternalServerError"),
    Kind.INTERNAL: (500, "InternalServerError"),
}


class Vllm:
    """vLLM's error dialect: `{"error": {"message", "type", "param", "code"}}`."""

    name = "vllm"

    def render(self, failure: Failure) -> JSONResponse:
        default = failure.status or STATUS[failure.kind]
        status, kind = _TYPES.get(failure.kind, (default, status_phrase(default)))
        info = {"message": failure.message, "type": kind, "param": failure.field, "code": status}
        return JSONResponse({"error": info}, status, headers=dict(failure.headers))

    def validation(self, errors: Sequence[Mapping[str, Any]]) -> Failure:
        lines = "".join(f"\n  {param_of(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:10])
        message = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}:{lines}"
        param = param_of(errors[0].get("loc", ())) if errors else None
        return Failure(Kind.VALIDATION, message, param)


DIALECT = Vllm()


async def _scored(job: ScoringJob, body: VllmRequest, request: Request, pipeline: Pipeline) -> ScoreResult:
    """Score as vLLM would: an input over the max length is refused unless truncate_prompt_tokens says cut."""
    result = await until_disconnect(request, pipeline.score(job))
    if body.truncate_prompt_tokens is None and result.truncated:
        limit = result.model.bundle.meta.formatting.max_length
        raise InvalidInput(
            f"This model's maximum context length is {limit} tokens. However, {result.truncated} of the inputs "
            "contain more. Please reduce the length of the input prompt, or send truncate_prompt_tokens=-1 to cut it.",
            field="input_tokens",
        )
    return result


def _head(prefix: str, request: Request, body: VllmRequest, result: ScoreResult) -> dict[str, Any]:
    request_id = request.headers.get("x-request-id", body.request_id)
    return {
        "id": f"{prefix}-{request_id}",
        "object": "list",
        "created": int(time.time()),
        "model": result.model.model_id,
    }


def _usage(result: ScoreResult) -> dict[str, Any]:
    return {
        "prompt_tokens": result.tokens,
        "total_tokens": result.tokens,
        "completion_tokens": 0,
        "completion_tokens_details": None,
    }


async def score(body: Pairs, request: Request, pipeline: Pipeline) -> Response:
    """vLLM's /score (the route of its /score path is service.protocols.shared's)."""
    result = await _scored(body.job(), body, request, pipeline)
    scores = activated(result.raw, body.use_activation is not False)
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return json_response(_head("score", request, body, result) | {"data": data, "usage": _usage(result)})


async def rerank(body: VllmRerankRequest, request: Request, pipeline: Pipeline) -> Response:
    """vLLM's rerank: results best first (ties in input order), cut to top_n."""
    result = await _scored(body.job(), body, request, pipeline)
    scores = activated(result.raw, body.use_activation is not False)
    documents = body._sides()[1]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # best first, ties in input order (as vLLM)
    results = [
        {"index": i, "document": {"text": documents[i], "multi_modal": None}, "relevance_score": scores[i]}
        for i in order[: body.top_n or None]
    ]
    head = _head("score", request, body, result)
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return json_response({"id": head["id"], "model": head["model"], "usage": usage, "results": results})


PATHS = ("/pooling", "/v1/score", "/v1/rerank", "/v2/rerank")
router = APIRouter(route_class=BoundedJSONRoute)


@router.post("/pooling", response_model=PoolingResponse, responses=ERRORS)
async def pooling(body: Annotated[PoolingRequest, Body()], request: Request, pipeline: AcceptingPipeline) -> Response:
    """vLLM's /pooling, `data[i].data` = `[score]`. `input`: a string or a list of them, each split at its last
    assistant turn (an hh-style transcript) or else scored as the completion of an empty prompt; token ids are
    refused. `messages`: the last one, the assistant's, is the completion and those before it the prompt (text
    content parts are joined with newlines). Scores are σ(reward) unless `use_activation` is false, which gives the
    raw reward our /score returns (vLLM's default for a one-label classifier). Errors are vLLM's."""
    result = await _scored(body.job(), body, request, pipeline)
    scores = activated(result.raw, body.use_activation is not False)
    data = [{"index": i, "object": "pooling", "data": [s]} for i, s in enumerate(scores)]
    return json_response(_head("pooling", request, body, result) | {"data": data, "usage": _usage(result)})


@router.post("/v1/score", response_model=VllmScoreResponse, responses=ERRORS)
async def score_v1(
    body: Annotated[VllmScoreRequest, Body()], request: Request, pipeline: AcceptingPipeline
) -> Response:
    """vLLM's /score: `queries` + `documents` (or + `items`), `data_1` + `data_2` or `text_1` + `text_2`, each a
    string or a list: 1:1, 1:N (the one query goes with every document) or N:N pairs, scored as (prompt = query,
    completion = document). `data` is in input order. Scores are σ(reward) unless `use_activation` is false, which
    gives the raw reward our /score returns (vLLM's default for a one-label classifier). Errors are vLLM's."""
    return await score(body, request, pipeline)


@router.post("/v1/rerank", response_model=VllmRerankResponse, responses=ERRORS)
async def rerank_v1(body: VllmRerankRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """vLLM's (Jina/Cohere-style) rerank: each document is scored as the completion of `query`; `results` best
    first, cut to `top_n` (0: all). Scores are σ(reward) unless `use_activation` is false (the raw reward).
    Errors are vLLM's."""
    return await rerank(body, request, pipeline)


@router.post("/v2/rerank", response_model=VllmRerankResponse, responses=ERRORS)
async def rerank_v2(body: VllmRerankRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """The same as POST /v1/rerank (vLLM serves both)."""
    return await rerank(body, request, pipeline)
