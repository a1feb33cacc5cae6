"""text-embeddings-inference's /predict and /rerank (TEI 1.9.3) over the same pipeline."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, cast

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictBool, Tag, WithJsonSchema

from models.messages import Text

from . import errors, routes, vllm
from .bodies import BoundedJSONRoute
from .deps import AcceptingPipeline
from .errors import Dialect, Empty, InvalidInput
from .pipeline import Pipeline
from .schemas import Utf8Str

LABEL = "LABEL_0"  # what a one-label Hugging Face config's id2label names its label


class TeiRequest(vllm.OneShape):
    model_config = ConfigDict(extra="ignore")  # TEI (serde) ignores unknown fields

    truncate: StrictBool | None = Field(
        None,
        description="null: TEI's default since 1.9 (cut); true: cut an input over the model's max length as "
        "training did (the prompt's left first); false: refuse it (422).",
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = Field(
        "Right", description="Accepted for TEI clients; the bundle's own cut (as in training) applies."
    )
    raw_scores: StrictBool = Field(False, description="false: σ(reward), TEI's default for one label; true: raw.")

    def texts(self) -> list[tuple[str, Text]]:
        raise NotImplementedError  # each shape says (service.pipeline.ScoringRequest)

    def pairs(self) -> tuple[list[Text], list[Text]]:
        raise NotImplementedError

    def pair_field(self, i: int) -> str:
        raise NotImplementedError


Pair = Annotated[list[Utf8Str], Field(min_length=1, max_length=2)]
_EXPECTING = (
    "a string, a pair of strings [string, string] or a batch of mixed strings and pairs "
    "[[string], [string, string], ...]"
)
# Published with what TEI refuses as Empty (400): an empty text, or a pair of two (tokenization.rs, is_empty).
_TEXT = {"type": "string", "minLength": 1, "description": "A text"}
_PAIR = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "maxItems": 2,
    "contains": {"minLength": 1},
    "description": "[text], or a pair [prompt, completion] (not both empty)",
}
_INPUTS = {
    "anyOf": [_TEXT, _PAIR, {"type": "array", "items": _PAIR, "minItems": 1, "description": "A batch"}],
    "examples": ["I like you."],
}


def _grammar(inputs: Any) -> Any:
    """TEI's own message for a list of the wrong length (router/src/http/types.rs, PredictInput)."""
    if isinstance(inputs, list):
        batch = bool(inputs) and isinstance(inputs[0], list)
        for length in [len(s) for s in inputs if isinstance(s, list)] if batch else [len(inputs)]:
            if not 1 <= length <= 2:
                raise ValueError(f"invalid length {length}, expected {_EXPECTING}")
    return inputs


class PredictRequest(TeiRequest):
    inputs: Annotated[
        Utf8Str | Pair | Annotated[list[Pair], Field(min_length=1)], BeforeValidator(_grammar), WithJsonSchema(_INPUTS)
    ]

    @property
    def batch(self) -> bool:
        return isinstance(self.inputs, list) and isinstance(self.inputs[0], list)

    def _sequences(self) -> list[list[str]]:
        """Each input as [text] or [prompt, completion]."""
        if isinstance(self.inputs, str):
            return [[self.inputs]]
        return cast(list[list[str]], self.inputs) if self.batch else [cast(list[str], self.inputs)]

    def texts(self) -> list[tuple[str, Text]]:
        names = [f"inputs.{i}" for i in range(len(self._sequences()))] if self.batch else ["inputs"]
        return [(f"{name}.{j}", t) for name, s in zip(names, self._sequences(), strict=True) for j, t in enumerate(s)]

    def pairs(self) -> tuple[list[Text], list[Text]]:
        """A text is split at its last assistant turn (else it is the completion of an empty prompt); a pair
        [a, b] is (prompt a, completion b)."""
        prompts: list[Text] = []
        completions: list[Text] = []
        for s in self._sequences():
            if not any(s):
                raise Empty("Input validation error: `inputs` cannot be empty")
            prompt, completion = vllm.split_text(s[0]) if len(s) == 1 else (s[0], s[1])
            prompts.append(prompt)
            completions.append(completion)
        return prompts, completions

    def pair_field(self, i: int) -> str:
        return f"inputs.{i}" if self.batch else "inputs"


class TeiRerankRequest(TeiRequest):
    foreign: ClassVar[tuple[str, ...]] = ("documents",)  # vLLM's /rerank body
    query: Utf8Str
    candidates: list[Utf8Str] = Field(alias="texts")  # `texts` in JSON; texts() is what every request gives
    return_text: StrictBool = Field(False, description="Echo each text in its result.")

    def texts(self) -> list[tuple[str, Text]]:
        named: list[tuple[str, Text]] = [("query", self.query)]
        return named + [(f"texts.{i}", t) for i, t in enumerate(self.candidates)]

    def pairs(self) -> tuple[list[Text], list[Text]]:
        if not self.candidates:
            raise Empty("`texts` cannot be empty")
        if not self.query and not all(self.candidates):
            raise Empty("Input validation error: `inputs` cannot be empty")
        return [self.query] * len(self.candidates), [*self.candidates]

    def pair_field(self, i: int) -> str:
        return f"texts.{i}"


class Prediction(BaseModel):
    score: float
    label: str


class Rank(BaseModel):
    index: int = Field(description="Position in `texts`.")
    score: float
    text: str | None = Field(None, description="Only with return_text.")


class TeiError(BaseModel):
    error: str
    error_type: str = Field(description="TEI's ErrorType: Validation, Empty, Overloaded, Unhealthy, Backend, ...")


_STATUSES = [
    (400, "An empty input or an empty `texts` (Empty)"),
    (401, "Missing or wrong API key"),
    (
        422,
        "Invalid request, too many inputs, a text over the character limit, a body over the size limit, or an "
        "input over the model's max length with truncate false (Validation)",
    ),
    (424, "Inference failed for the batch this request was in (Backend)"),
    (429, "Queue full; retry after `Retry-After` seconds (Overloaded)"),
    (503, "Not ready: loading, warming up or draining (Unhealthy)"),
]
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": TeiError, "description": d} for s, d in _STATUSES}
RERANK_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "model": TeiError | vllm.VllmError if status in vllm.ERRORS else TeiError,
        "description": f"TEI's: {ERRORS[status]['description']}"
        + (f"; vLLM's: {vllm.ERRORS[status]['description']}" if status in vllm.ERRORS else ""),
    }
    for status in ERRORS
} | {500: {"model": vllm.VllmError, "description": f"vLLM's: {vllm.ERRORS[500]['description']}"}}


def rerank_dialect(body: Any) -> Dialect:
    """POST /rerank: a JSON object with `documents` is vLLM's; anything else is TEI's (`texts`)."""
    if isinstance(body, BaseModel):
        return "vllm" if isinstance(body, vllm.VllmRequest) else "tei"
    return "vllm" if isinstance(body, dict) and "documents" in body else "tei"


RerankBody = Annotated[
    Annotated[TeiRerankRequest, Tag("<tei>")] | Annotated[vllm.VllmRerankRequest, Tag("<vllm>")],
    Discriminator(lambda body: f"<{rerank_dialect(body)}>"),
]


async def _scores(body: TeiRequest, request: Request, pipeline: Pipeline) -> list[float]:
    """Score as TEI would: an input over the max length is cut unless truncate is false; σ unless raw_scores."""
    result = await routes.run_scoring(request, pipeline, body)
    if body.truncate is False and result.truncated:
        limit = result.model.bundle.meta.formatting.max_length
        raise InvalidInput(f"Input validation error: `inputs` must have less than {limit} tokens")
    return vllm.activated(result.raw, not body.raw_scores)


router = APIRouter(route_class=BoundedJSONRoute)
errors.speak("/predict", "tei")
errors.speak("/rerank", "tei", rerank_dialect)


@router.post("/predict", response_model=list[Prediction] | list[list[Prediction]], responses=ERRORS)
async def predict(body: PredictRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """TEI's /predict. `inputs`: a text (split at its last assistant turn, else the completion of an empty prompt),
    a pair [prompt, completion], or a batch [[text] or [prompt, completion], ...]; a single input gets a list of
    {score, label}, a batch a list of those lists. Scores are σ(reward) unless `raw_scores` is true, which gives the
    raw reward our /score returns (TEI's default for one label). Errors are TEI's {error, error_type}."""
    scores = await _scores(body, request, pipeline)
    predictions = [[{"score": s, "label": LABEL}] for s in scores]
    return routes.json_response(predictions if body.batch else predictions[0])


@router.post(
    "/rerank",
    response_model=list[Rank] | vllm.VllmRerankResponse,
    responses=RERANK_ERRORS,
    dependencies=[Depends(errors.note_dialect)],
)
async def rerank(body: Annotated[RerankBody, Body()], request: Request, pipeline: AcceptingPipeline) -> Response:
    """TEI's /rerank, and vLLM's at the same path, routed on the body's shape: a JSON object with `documents` is
    vLLM's (see POST /v1/rerank) and is answered, errors included, as vLLM answers; anything else is TEI's.

    TEI's: each of `texts` is scored as the completion of `query`; a bare list of {index, score} (+ text with
    `return_text`), best first. Scores are σ(reward) unless `raw_scores` is true (the raw reward). Errors are TEI's
    {error, error_type}."""
    if isinstance(body, vllm.VllmRerankRequest):
        return await vllm.rerank(body, request, pipeline)
    scores = await _scores(body, request, pipeline)
    order = sorted(range(len(scores)), key=scores.__getitem__)[::-1]  # as TEI: ascending, reversed (ties: last first)
    texts = body.candidates if body.return_text else None
    return routes.json_response(
        [{"index": i, "score": scores[i]} | ({"text": texts[i]} if texts else {}) for i in order]
    )
