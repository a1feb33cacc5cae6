"""text-embeddings-inference's /predict and /rerank (TEI 1.9.3) over the same pipeline: its shapes, each turned into one
ScoringJob, its answers, and its error dialect (the route of the /rerank path is service.protocols.shared's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, cast

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, WithJsonSchema

from models.messages import Text

from ..core.errors import Empty, InvalidInput, Kind
from ..core.pipeline import Pipeline, ScoringJob
from ..web.bodies import BoundedJSONRoute
from ..web.deps import AcceptingPipeline
from ..web.dialects import Failure, param_of
from .common import STATUS, OneShape, Utf8Str, activated, json_response, lone_text_pair, until_disconnect

LABEL = "LABEL_0"  # what a one-label Hugging Face config's id2label names its label


class TeiRequest(OneShape):
    model_config = ConfigDict(extra="ignore")  # TEI (serde) ignores unknown fields

    truncate: StrictBool | None = Field(
        None,
        description="null: TEI's default since 1.9 (cut); true: cut an input over the model's max length as "
        "training did (the prompt first, by the bundle's truncation policy); false: refuse it (422).",
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = Field(
        "Right", description="Accepted for TEI clients; the bundle's own cut (as in training) applies."
    )
    raw_scores: StrictBool = Field(False, description="false: σ(reward), TEI's default for one label; true: raw.")


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

    def job(self) -> ScoringJob:
        """A text is split at its last assistant turn (else it is the completion of an empty prompt); a pair
        [a, b] is (prompt a, completion b)."""
        sequences = self._sequences()
        names = [f"inputs.{i}" for i in range(len(sequences))] if self.batch else ["inputs"]
        texts = [(f"{name}.{j}", t) for name, s in zip(names, sequences, strict=True) for j, t in enumerate(s)]
        prompts: list[Text] = []
        completions: list[Text] = []
        for s in sequences:
            if not any(s):
                raise Empty("Input validation error: `inputs` cannot be empty")
            prompt, completion = lone_text_pair(s[0]) if len(s) == 1 else (s[0], s[1])
            prompts.append(prompt)
            completions.append(completion)
        return ScoringJob(prompts, completions, names, list(texts))


class TeiRerankRequest(TeiRequest):
    foreign: ClassVar[tuple[str, ...]] = ("documents",)  # vLLM's /rerank body
    query: Utf8Str
    candidates: list[Utf8Str] = Field(alias="texts")  # `texts` in JSON; texts() is what every request gives
    return_text: StrictBool = Field(False, description="Echo each text in its result.")

    def job(self) -> ScoringJob:
        texts: list[tuple[str, Text]] = [("query", self.query)]
        texts += [(f"texts.{i}", t) for i, t in enumerate(self.candidates)]
        if not self.candidates:
            raise Empty("`texts` cannot be empty")
        if not self.query and not all(self.candidates):
            raise Empty("Input validation error: `inputs` cannot be empty")
        names = [f"texts.{i}" for i in range(len(self.candidates))]
        return ScoringJob([self.query] * len(self.candidates), [*self.candidates], names, texts)


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
# TEI answers an invalid or too large request 422 Validation (its batch-size and token limits are Validation), an
# empty one 400 Empty, overload 429 Overloaded, not ready 503 Unhealthy, a failed batch 424 Backend (TEI 1.9.3
# router/src/lib.rs ErrorType and server.rs ErrorType -> StatusCode); TEI has no type for the rest (its 401 has no
# body), which keep their status with our kind in TEI's PascalCase.
_TYPES: dict[Kind, tuple[int, str]] = {
    Kind.INVALID_BODY: (422, "Validation"),
    Kind.INVALID: (422, "Validation"),
    Kind.VALIDATION: (422, "Validation"),
    Kind.TOO_LARGE: (422, "Validation"),
    Kind.EMPTY: (400, "Empty"),
    Kind.OVERLOADED: (429, "Overloaded"),
    Kind.NOT_READY: (503, "Unhealthy"),
    Kind.INFERENCE_FAILED: (424, "Backend"),
    Kind.INTERNAL: (424, "Backend"),
}


class Tei:
    """TEI's error dialect: `{"error", "error_type"}`."""

    name = "tei"

    def render(self, failure: Failure) -> JSONResponse:
        default = failure.status or STATUS[failure.kind]
        status, kind = _TYPES.get(failure.kind, (default, failure.kind.value.title().replace("_", "")))
        return JSONResponse({"error": failure.message, "error_type": kind}, status, headers=dict(failure.headers))

    def validation(self, errors: Sequence[Mapping[str, Any]]) -> Failure:
        first = errors[0] if errors else {}
        message = f"{param_of(first.get('loc', ()))}: {first.get('msg', 'invalid request')}"
        return Failure(Kind.VALIDATION, f"Input validation error: {message}")


DIALECT = Tei()


async def _scores(job: ScoringJob, body: TeiRequest, request: Request, pipeline: Pipeline) -> list[float]:
    """Score as TEI would: an input over the max length is cut unless truncate is false; σ unless raw_scores."""
    result = await until_disconnect(request, pipeline.score(job))
    if body.truncate is False and result.truncated:
        limit = result.model.bundle.meta.formatting.max_length
        raise InvalidInput(f"Input validation error: `inputs` must have less than {limit} tokens")
    return activated(result.raw, not body.raw_scores)


PATHS = ("/predict",)
router = APIRouter(route_class=BoundedJSONRoute)


@router.post("/predict", response_model=list[Prediction] | list[list[Prediction]], responses=ERRORS)
async def predict(body: PredictRequest, request: Request, pipeline: AcceptingPipeline) -> Response:
    """TEI's /predict. `inputs`: a text (split at its last assistant turn, else the completion of an empty prompt),
    a pair [prompt, completion], or a batch [[text] or [prompt, completion], ...]; a single input gets a list of
    {score, label}, a batch a list of those lists. Scores are σ(reward) unless `raw_scores` is true, which gives the
    raw reward our /score returns (TEI's default for one label). Errors are TEI's {error, error_type}."""
    scores = await _scores(body.job(), body, request, pipeline)
    predictions = [[{"score": s, "label": LABEL}] for s in scores]
    return json_response(predictions if body.batch else predictions[0])


async def rerank(body: TeiRerankRequest, request: Request, pipeline: Pipeline) -> Response:
    """TEI's /rerank: each of `texts` is scored as the completion of `query`; a bare list of {index, score} (+ text
    with `return_text`), best first."""
    scores = await _scores(body.job(), body, request, pipeline)
    order = sorted(range(len(scores)), key=scores.__getitem__)[::-1]  # as TEI: ascending, reversed (ties: last first)
    texts = body.candidates if body.return_text else None
    return json_response([{"index": i, "score": scores[i]} | ({"text": texts[i]} if texts else {}) for i in order])
