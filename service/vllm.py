"""vLLM's pooling API (0.34: /pooling, /score, /v1/score, /rerank, /v1/rerank, /v2/rerank) over the same pipeline."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from models.messages import FormatError, Text, plain_message

from . import errors, routes
from .bodies import BoundedJSONRoute
from .deps import AcceptingPipeline
from .errors import Dialect, InvalidInput
from .openrlhf import to_pair
from .pipeline import Pipeline, ScoreResult
from .schemas import ErrorResponse, ScoreRequest, ScoreResponse, Utf8Str

# Keys vLLM removed and refuses, with its messages (pooling/base/protocol.py).
_REMOVED = {"normalize": "Parameter `normalize` was removed; use `use_activation` instead."}


def _refused_in_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    foreign = getattr(cls, "foreign", ())
    if foreign:
        schema["not"] = {"anyOf": [{"required": [key]} for key in foreign]}


class OneShape(BaseModel):
    """A request shape that refuses the keys of the other shapes served at its path (`foreign`): exactly one shape
    fits any body, as the published `oneOf` says, whatever unknown fields the protocol lets through."""

    model_config = ConfigDict(json_schema_extra=_refused_in_schema)
    foreign: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _refuse_foreign(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in cls.foreign:
                if key in data:
                    required = " + ".join(f"`{f.alias or n}`" for n, f in cls.model_fields.items() if f.is_required())
                    raise ValueError(
                        _REMOVED.get(key, f"`{key}` belongs to another request shape; this one is {required}")
                    )
        return data


def _text_only(value: Any) -> Any:
    if any(isinstance(v, dict) for v in (value if isinstance(value, list) else [value])):
        raise ValueError("MultiModalParam is not supported for this reward model: send text")
    return value


def _no_token_ids(value: Any) -> Any:
    if isinstance(value, list) and any(isinstance(v, list) or type(v) is int for v in value):
        raise ValueError("token ids are not supported: send text")
    return value


def _text_parts_only(value: Any) -> Any:
    for part in value if isinstance(value, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind != "text":
            raise ValueError(f"a {kind!r} content part: this reward model reads text only (send text parts)")
    return value


Side = Annotated[Utf8Str | list[Utf8Str], BeforeValidator(_text_only)]


def split_text(text: str) -> tuple[Text, Text]:
    """One whole text as (prompt, completion), as /get_reward reads a query sent without its prompt: a policy's chat
    markup or an hh-style transcript becomes the conversation, anything else the completion of an empty prompt."""
    pair = to_pair(text, None)
    return pair.prompt, pair.completion


class VllmRequest(OneShape):
    """What every vLLM pooling request has. Unknown fields are ignored, as vLLM does."""

    model_config = ConfigDict(extra="allow")
    tag: ClassVar[str] = "<vllm>"

    model: StrictStr | None = Field(None, description="Not checked: the one loaded bundle answers any name.")
    user: StrictStr | None = None
    request_id: StrictStr = Field(
        default_factory=lambda: uuid.uuid4().hex, description="The response id's suffix (`X-Request-Id` wins)."
    )
    use_activation: StrictBool | None = Field(
        None,
        description="null or true: σ(reward), vLLM's default for a one-label classifier; false: the raw reward "
        "(what our /score returns).",
    )
    truncate_prompt_tokens: Literal[-1] | None = Field(
        None,
        description="null: an input longer than the model's max length is refused (400), as vLLM does; -1: cut to "
        "that length as training did (the prompt's left first). Other lengths are refused: the cut is the bundle's.",
    )

    @field_validator("truncate_prompt_tokens", mode="before")
    @classmethod
    def _only_max_length(cls, k: Any) -> Any:
        if type(k) is int and k != -1:
            raise ValueError(
                f"truncate_prompt_tokens={k} is not supported: inputs are cut only to the model's max "
                "length, as in training (send -1), or refused when longer (null)"
            )
        return k

    def texts(self) -> list[tuple[str, Text]]:
        raise NotImplementedError  # each shape says (service.pipeline.ScoringRequest)

    def pairs(self) -> tuple[list[Text], list[Text]]:
        raise NotImplementedError

    def pair_field(self, i: int) -> str:
        raise NotImplementedError


class _Pairs(VllmRequest):
    sides: ClassVar[tuple[str, str]]

    def _sides(self) -> tuple[list[str], list[str]]:
        a, b = (getattr(self, name) for name in self.sides)
        return ([a] if isinstance(a, str) else a), ([b] if isinstance(b, str) else b)

    def texts(self) -> list[tuple[str, Text]]:
        a, b = self._sides()
        first, second = self.sides
        named: list[tuple[str, Text]] = [(f"{first}.{i}", t) for i, t in enumerate(a)]
        return named + [(f"{second}.{i}", t) for i, t in enumerate(b)]

    def pairs(self) -> tuple[list[Text], list[Text]]:
        """vLLM's pairing (scoring/utils.py): 1:1, 1:N (the one query goes with every document) or N:N."""
        a, b = self._sides()
        if len(a) > 1 and len(a) != len(b):
            raise InvalidInput("Input lengths must be either 1:1, 1:N or N:N")
        if not a:
            raise InvalidInput("At least one text element must be given")
        if not b:
            raise InvalidInput("At least one text_pair element must be given")
        prompts: list[Text] = [a[0]] * len(b) if len(a) == 1 else [*a]
        completions: list[Text] = [*b]
        return prompts, completions

    def pair_field(self, i: int) -> str:
        return f"{self.sides[1]}.{i}"


class ScoreQueriesDocumentsRequest(_Pairs):
    tag: ClassVar[str] = "<queries+documents>"
    foreign: ClassVar[tuple[str, ...]] = ("items", "data_1", "data_2", "text_1", "text_2")
    sides: ClassVar[tuple[str, str]] = ("queries", "documents")
    queries: Side
    documents: Side


class ScoreQueriesItemsRequest(_Pairs):
    tag: ClassVar[str] = "<queries+items>"
    foreign: ClassVar[tuple[str, ...]] = ("documents", "data_1", "data_2", "text_1", "text_2")
    sides: ClassVar[tuple[str, str]] = ("queries", "items")
    queries: Side
    items: Side


class ScoreDataRequest(_Pairs):
    tag: ClassVar[str] = "<data_1+data_2>"
    foreign: ClassVar[tuple[str, ...]] = ("queries", "documents", "items", "text_1", "text_2")
    sides: ClassVar[tuple[str, str]] = ("data_1", "data_2")
    data_1: Side
    data_2: Side


class ScoreTextRequest(_Pairs):
    tag: ClassVar[str] = "<text_1+text_2>"
    foreign: ClassVar[tuple[str, ...]] = ("queries", "documents", "items", "data_1", "data_2")
    sides: ClassVar[tuple[str, str]] = ("text_1", "text_2")
    text_1: Side
    text_2: Side


class VllmRerankRequest(_Pairs):
    foreign: ClassVar[tuple[str, ...]] = ("texts",)  # TEI's /rerank body
    sides: ClassVar[tuple[str, str]] = ("query", "documents")
    query: Annotated[Utf8Str, BeforeValidator(_text_only)]
    documents: Side
    top_n: Annotated[StrictInt, Field(ge=0)] = Field(0, description="Keep the best n results (0: all).")


class _Pooling(VllmRequest):
    task: Literal["classify"] | None = Field(None, description="A reward model's pooling task is classify.")
    dimensions: None = Field(None, description="Refused when set, as vLLM does on /pooling.")
    encoding_format: Literal["float"] = Field("float", description="Scores come back as JSON numbers only.")

    @field_validator("task", mode="before")
    @classmethod
    def _check_task(cls, task: Any) -> Any:
        removed = {"score": "`score` task was removed; use `classify` instead.", "encode": "`encode` task was removed"}
        if isinstance(task, str) and task in removed:
            raise ValueError(removed[task])
        if isinstance(task, str) and task != "classify":
            raise ValueError(f"Unsupported task: {task!r} Supported tasks: ('classify',)")
        return task

    @field_validator("dimensions", mode="before")
    @classmethod
    def _check_dimensions(cls, dimensions: Any) -> Any:
        if dimensions is not None:
            raise ValueError("dimensions is currently not supported")
        return dimensions


class PoolingCompletionRequest(_Pooling):
    """Texts to score whole: an hh-style transcript ("\\n\\nHuman: …\\n\\nAssistant: …") is split at its last
    assistant turn, anything else is the completion of an empty prompt."""

    foreign: ClassVar[tuple[str, ...]] = ("messages", "normalize")
    tag: ClassVar[str] = "<input>"
    input: Annotated[Utf8Str | Annotated[list[Utf8Str], Field(min_length=1)], BeforeValidator(_no_token_ids)]

    def _inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input

    def texts(self) -> list[tuple[str, Text]]:
        named: list[tuple[str, Text]] = [(f"input.{i}", t) for i, t in enumerate(self._inputs())]
        return named

    def pairs(self) -> tuple[list[Text], list[Text]]:
        split = [split_text(t) for t in self._inputs()]
        return [p for p, _ in split], [c for _, c in split]

    def pair_field(self, i: int) -> str:
        return f"input.{i}" if isinstance(self.input, list) else "input"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Utf8Str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool_calls are rendered into the text; name and the like are not read
    role: Utf8Str
    content: Annotated[Utf8Str | list[TextPart] | None, BeforeValidator(_text_parts_only)] = None

    def text(self) -> str:
        """The message as text, by the one rule every client path follows (models.messages.plain_message)."""
        try:
            return plain_message(self.model_dump())["content"]
        except FormatError as e:
            raise InvalidInput(str(e), field="messages") from None


class PoolingChatRequest(_Pooling):
    """A conversation whose last message, the assistant's, is the completion to score."""

    foreign: ClassVar[tuple[str, ...]] = ("input", "normalize")
    tag: ClassVar[str] = "<messages>"
    messages: list[Message] = Field(min_length=1)

    def texts(self) -> list[tuple[str, Text]]:
        named: list[tuple[str, Text]] = [(f"messages.{i}.content", m.text()) for i, m in enumerate(self.messages)]
        return named

    def pairs(self) -> tuple[list[Text], list[Text]]:
        *before, last = self.messages
        if last.role != "assistant":
            raise InvalidInput(
                f"the last message is the reply to score and must be the assistant's, not {last.role!r}",
                field=f"messages.{len(before)}.role",
            )
        prompt: Text = [{"role": m.role, "content": m.text()} for m in before]
        return [prompt], [[{"role": "assistant", "content": last.text()}]]

    def pair_field(self, i: int) -> str:
        return "messages"


def _score_shape(body: Any) -> str:
    """The tag of a vLLM /score body's shape (each shape refuses the others' keys)."""
    if isinstance(body, VllmRequest):
        return body.tag
    keys = body.keys() if isinstance(body, dict) else set()
    if "text_1" in keys or "text_2" in keys:
        return "<text_1+text_2>"
    if "data_1" in keys or "data_2" in keys:
        return "<data_1+data_2>"
    return "<queries+items>" if "items" in keys and "documents" not in keys else "<queries+documents>"


VllmScoreRequest = Annotated[
    Annotated[ScoreQueriesDocumentsRequest, Tag(ScoreQueriesDocumentsRequest.tag)]
    | Annotated[ScoreQueriesItemsRequest, Tag(ScoreQueriesItemsRequest.tag)]
    | Annotated[ScoreDataRequest, Tag(ScoreDataRequest.tag)]
    | Annotated[ScoreTextRequest, Tag(ScoreTextRequest.tag)],
    Discriminator(_score_shape),
]
_SCORE_KEYS = frozenset({"queries", "documents", "data_1", "data_2", "text_1", "text_2"})


def score_dialect(body: Any) -> Dialect:
    """POST /score: a JSON object naming any of vLLM's keys (queries, documents, data_1, data_2, text_1, text_2) is
    vLLM's; anything else is ours (`items` of {prompt, completion})."""
    if isinstance(body, BaseModel):
        return "vllm" if isinstance(body, VllmRequest) else "ours"
    return "vllm" if isinstance(body, dict) and not _SCORE_KEYS.isdisjoint(body) else "ours"


ScoreBody = Annotated[
    Annotated[ScoreRequest, Tag("<ours>")] | Annotated[VllmScoreRequest, Tag("<vllm>")],
    Discriminator(lambda body: f"<{score_dialect(body)}>"),  # the tags name the dialects
]


def _pooling_shape(body: Any) -> str:
    """/pooling: a body with `messages` is a conversation, else texts (`input`)."""
    if isinstance(body, VllmRequest):
        return body.tag
    return "<messages>" if isinstance(body, dict) and "messages" in body else "<input>"


PoolingRequest = Annotated[
    Annotated[PoolingCompletionRequest, Tag(PoolingCompletionRequest.tag)]
    | Annotated[PoolingChatRequest, Tag(PoolingChatRequest.tag)],
    Discriminator(_pooling_shape),
]


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Model input tokens of all pairs.")
    total_tokens: int
    completion_tokens: int = 0
    completion_tokens_details: None = None


class PoolingData(BaseModel):
    index: int
    object: Literal["pooling"]
    data: list[float] = Field(description="[score]: one label.")


class PoolingResponse(BaseModel):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[PoolingData]
    usage: Usage


class ScoreData(BaseModel):
    index: int
    object: Literal["score"]
    score: float


class VllmScoreResponse(BaseModel):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[ScoreData] = Field(description="In input order.")
    usage: Usage


class RerankDocument(BaseModel):
    text: str
    multi_modal: None = None


class RerankResult(BaseModel):
    index: int = Field(description="Position in `documents`.")
    document: RerankDocument
    relevance_score: float


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class VllmRerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult] = Field(description="Best first, at most `top_n`.")


class VllmErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class VllmError(BaseModel):
    error: VllmErrorInfo


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
SCORE_ERRORS: dict[int | str, dict[str, Any]] = routes.ERRORS | {
    status: {
        "model": ErrorResponse | VllmError,
        "description": f"ours: {routes.ERRORS[status]['description']}; vLLM's: {ERRORS[status]['description']}",
    }
    for status in ERRORS
}


def activated(raw: np.ndarray, on: bool) -> list[float]:
    """σ(reward) in float64 when `on` (vLLM's and TEI's default for a one-label classifier), else the raw reward."""
    if not on:
        return raw.tolist()
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-raw.astype(np.float64)))).tolist()


async def _scored(body: VllmRequest, request: Request, pipeline: Pipeline) -> ScoreResult:
    """Score as vLLM would: an input over the max length is refused unless truncate_prompt_tokens says cut."""
    result = await routes.run_scoring(request, pipeline, body)
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


async def _score(body: _Pairs, request: Request, pipeline: Pipeline) -> Response:
    result = await _scored(body, request, pipeline)
    scores = activated(result.raw, body.use_activation is not False)
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return routes.json_response(_head("score", request, body, result) | {"data": data, "usage": _usage(result)})


async def rerank(body: VllmRerankRequest, request: Request, pipeline: Pipeline) -> Response:
    """vLLM's rerank: results best first (ties in input order), cut to top_n."""
    result = await _scored(body, request, pipeline)
    scores = activated(result.raw, body.use_activation is not False)
    documents = body._sides()[1]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # best first, ties in input order (as vLLM)
    results = [
        {"index": i, "document": {"text": documents[i], "multi_modal": None}, "relevance_score": scores[i]}
        for i in order[: body.top_n or None]
    ]
    head = _head("score", request, body, result)
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return routes.json_response({"id": head["id"], "model": head["model"], "usage": usage, "results": results})


router = APIRouter(route_class=BoundedJSONRoute)
for _path in ("/pooling", "/v1/score", "/v1/rerank", "/v2/rerank"):
    errors.speak(_path, "vllm")
errors.speak("/score", "ours", score_dialect)


@router.post("/pooling", response_model=PoolingResponse, responses=ERRORS)
async def pooling(body: Annotated[PoolingRequest, Body()], request: Request, pipeline: AcceptingPipeline) -> Response:
    """vLLM's /pooling, `data[i].data` = `[score]`. `input`: a string or a list of them, each split at its last
    assistant turn (an hh-style transcript) or else scored as the completion of an empty prompt; token ids are
    refused. `messages`: the last one, the assistant's, is the completion and those before it the prompt (text
    content parts are joined with newlines). Scores are σ(reward) unless `use_activation` is false, which gives the
    raw reward our /score returns (vLLM's default for a one-label classifier). Errors are vLLM's."""
    result = await _scored(body, request, pipeline)
    scores = activated(result.raw, body.use_activation is not False)
    data = [{"index": i, "object": "pooling", "data": [s]} for i, s in enumerate(scores)]
    return routes.json_response(_head("pooling", request, body, result) | {"data": data, "usage": _usage(result)})


@router.post(
    "/score",
    response_model=ScoreResponse | VllmScoreResponse,
    responses=SCORE_ERRORS,
    dependencies=[Depends(errors.note_dialect)],
)
async def score(body: Annotated[ScoreBody, Body()], request: Request, pipeline: AcceptingPipeline) -> Response:
    """Score many (prompt, completion) pairs; one reward each, in the order given.

    The same path takes vLLM's /score bodies, routed on the body's shape: a JSON object with any of `queries`,
    `documents`, `data_1`, `data_2`, `text_1`, `text_2` is vLLM's (see POST /v1/score) and is answered, errors
    included, as vLLM answers; anything else is ours (`items` of {prompt, completion}, raw rewards)."""
    if isinstance(body, ScoreRequest):
        return await routes.score(body, request, pipeline)
    return await _score(body, request, pipeline)


@router.post("/v1/score", response_model=VllmScoreResponse, responses=ERRORS)
async def score_v1(
    body: Annotated[VllmScoreRequest, Body()], request: Request, pipeline: AcceptingPipeline
) -> Response:
    """vLLM's /score: `queries` + `documents` (or + `items`), `data_1` + `data_2` or `text_1` + `text_2`, each a
    string or a list: 1:1, 1:N (the one query goes with every document) or N:N pairs, scored as (prompt = query,
    completion = document). `data` is in input order. Scores are σ(reward) unless `use_activation` is false, which
    gives the raw reward our /score returns (vLLM's default for a one-label classifier). Errors are vLLM's."""
    return await _score(body, request, pipeline)


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
