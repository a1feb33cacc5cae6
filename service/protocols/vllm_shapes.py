"""vLLM's pooling API shapes (0.34): the requests of /pooling, /score, /v1/score and /rerank, each turned into one
ScoringJob, and the answers' shapes (published in the OpenAPI schema)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal

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
)

from models.messages import FormatError, Text, plain_message

from ..core.errors import InvalidInput
from ..core.pipeline import ScoringJob
from .common import OneShape, Utf8Str, lone_text_pair


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
        "that length as training did (prompt first). Other lengths are refused: the cut is the bundle's.",
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


class Pairs(VllmRequest):
    """A vLLM request of (query, document) sides, paired 1:1, 1:N or N:N."""

    sides: ClassVar[tuple[str, str]]

    def _sides(self) -> tuple[list[str], list[str]]:
        a, b = (getattr(self, name) for name in self.sides)
        return ([a] if isinstance(a, str) else a), ([b] if isinstance(b, str) else b)

    def job(self) -> ScoringJob:
        """vLLM's pairing (scoring/utils.py): 1:1, 1:N (the one query goes with every document) or N:N."""
        a, b = self._sides()
        first, second = self.sides
        texts: list[tuple[str, Text]] = [(f"{first}.{i}", t) for i, t in enumerate(a)]
        texts += [(f"{second}.{i}", t) for i, t in enumerate(b)]
        if len(a) > 1 and len(a) != len(b):
            raise InvalidInput("Input lengths must be either 1:1, 1:N or N:N")
        if not a:
            raise InvalidInput("At least one text element must be given")
        if not b:
            raise InvalidInput("At least one text_pair element must be given")
        prompts: list[Text] = [a[0]] * len(b) if len(a) == 1 else [*a]
        return ScoringJob(prompts, [*b], [f"{second}.{i}" for i in range(len(b))], texts)


class ScoreQueriesDocumentsRequest(Pairs):
    tag: ClassVar[str] = "<queries+documents>"
    foreign: ClassVar[tuple[str, ...]] = ("items", "data_1", "data_2", "text_1", "text_2")
    sides: ClassVar[tuple[str, str]] = ("queries", "documents")
    queries: Side
    documents: Side


class ScoreQueriesItemsRequest(Pairs):
    tag: ClassVar[str] = "<queries+items>"
    foreign: ClassVar[tuple[str, ...]] = ("documents", "data_1", "data_2", "text_1", "text_2")
    sides: ClassVar[tuple[str, str]] = ("queries", "items")
    queries: Side
    items: Side


class ScoreDataRequest(Pairs):
    tag: ClassVar[str] = "<data_1+data_2>"
    foreign: ClassVar[tuple[str, ...]] = ("queries", "documents", "items", "text_1", "text_2")
    sides: ClassVar[tuple[str, str]] = ("data_1", "data_2")
    data_1: Side
    data_2: Side


class ScoreTextRequest(Pairs):
    tag: ClassVar[str] = "<text_1+text_2>"
    foreign: ClassVar[tuple[str, ...]] = ("queries", "documents", "items", "data_1", "data_2")
    sides: ClassVar[tuple[str, str]] = ("text_1", "text_2")
    text_1: Side
    text_2: Side


class VllmRerankRequest(Pairs):
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

    def job(self) -> ScoringJob:
        inputs = self._inputs()
        split = [lone_text_pair(t) for t in inputs]
        names = [f"input.{i}" for i in range(len(inputs))] if isinstance(self.input, list) else ["input"]
        texts: list[tuple[str, Text]] = [(f"input.{i}", t) for i, t in enumerate(inputs)]
        return ScoringJob([p for p, _ in split], [c for _, c in split], names, texts)


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

    def job(self) -> ScoringJob:
        texts: list[tuple[str, Text]] = [(f"messages.{i}.content", m.text()) for i, m in enumerate(self.messages)]
        *before, last = self.messages
        if last.role != "assistant":
            raise InvalidInput(
                f"the last message is the reply to score and must be the assistant's, not {last.role!r}",
                field=f"messages.{len(before)}.role",
            )
        prompt: Text = [{"role": m.role, "content": m.text()} for m in before]
        return ScoringJob([prompt], [[{"role": "assistant", "content": last.text()}]], ["messages"], texts)


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
