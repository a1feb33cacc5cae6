"""Our own request and response shapes (/score, /compare, /admin/reload). Types are strict (no "1" for true, no
numbers for text); each scoring request becomes one ScoringJob. Size limits depend on settings, so the pipeline
checks them and these models stay static for the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from models.messages import Text

from ..core.pipeline import ScoringJob
from .common import Utf8Str, no_lone_surrogates


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr

    _check = field_validator("role", "content")(no_lone_surrogates)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


TextField = Annotated[
    StrictStr | list[ChatMessage],
    Field(description="A string, or a list of {role, content} messages (the conversational format)."),
]


def to_text(text: str | list[ChatMessage]) -> Text:
    """A validated text as the formatting layer takes it: a string, or plain {role, content} dicts."""
    return text if isinstance(text, str) else [{"role": m.role, "content": m.content} for m in text]


def _check_text(value: str | list[ChatMessage]) -> str | list[ChatMessage]:
    if isinstance(value, str):
        return no_lone_surrogates(value)
    return value


Reference = Annotated[
    StrictStr | list[StrictStr | dict[str, Any]] | dict[str, Any] | None,
    Field(
        description="What verifiers of the reward recipe check the completion against: the answer (math), or tests "
        '(code: {"tests": [{"input", "output"} | "assert ..."]}). Ignored without a recipe.'
    ),
]


class ScoreItem(_Strict):
    prompt: TextField
    completion: TextField
    reference: Reference = None

    _check = field_validator("prompt", "completion")(_check_text)


MAX_WEIGHT = 1e6  # far beyond any sensible mix, far below where a weighted reward would leave float range
Weights = Annotated[
    dict[StrictStr, Annotated[float, Field(ge=-MAX_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False)]] | None,
    Field(
        description="Multi-objective models: the weight of each objective in the reward (unnamed objectives weigh "
        "0; default: the model's own combination), finite, within ±1e6. A model with one reward takes no weights."
    ),
]


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(min_length=1, description="Pairs to score; rewards come back in this order.")
    normalize: StrictBool | None = Field(
        None, description="Return (r − mean) / std with the bundle's eval statistics (default: RM_NORMALIZE)."
    )
    weights: Weights = None

    def job(self) -> ScoringJob:
        prompts = [to_text(it.prompt) for it in self.items]
        completions = [to_text(it.completion) for it in self.items]
        texts = [(f"items.{i}.prompt", p) for i, p in enumerate(prompts)]
        texts += [(f"items.{i}.completion", c) for i, c in enumerate(completions)]
        labels: list[object] = [it.reference for it in self.items]
        return ScoringJob(prompts, completions, [f"items.{i}" for i in range(len(prompts))], texts, labels)


OBJECTIVES = Field(
    None, description="Multi-objective models only: each objective's raw reward per pair (absent for one reward)."
)


class ScoreResponse(BaseModel):
    scores: list[float | None] = Field(
        description="The reward of each pair: the model's, or with a reward recipe the weighted sum of its "
        "components (null where a component failed with `on_failure: null`)."
    )
    model: str | None = Field(description="The bundle that scored (null: a verifier-only recipe).")
    truncated: int = Field(description="How many pairs were cut to the model's max length (prompt first).")
    objectives: dict[str, list[float]] | None = OBJECTIVES
    components: dict[str, list[float | None]] | None = Field(
        None, description="With a reward recipe: each component's value per pair, by name."
    )
    failures: dict[str, list[str | None]] | None = Field(
        None,
        description="With a reward recipe: per component, null or why it failed on the pair (timeout, no_answer, "
        "sandbox, error: ...).",
    )


class CompareRequest(_Strict):
    prompt: TextField
    completions: list[TextField] = Field(min_length=2, description="Two or more completions of the same prompt.")
    normalize: StrictBool | None = Field(None, description="As in /score (default: RM_NORMALIZE).")
    weights: Weights = None

    _check_prompt = field_validator("prompt")(_check_text)

    @field_validator("completions")
    @classmethod
    def _check_completions(cls, values: list[str | list[ChatMessage]]) -> list[str | list[ChatMessage]]:
        return [_check_text(v) for v in values]

    def job(self) -> ScoringJob:
        prompt = to_text(self.prompt)
        completions = [to_text(c) for c in self.completions]
        texts = [("prompt", prompt)] + [(f"completions.{i}", c) for i, c in enumerate(completions)]
        names = [f"completions.{i}" for i in range(len(completions))]
        return ScoringJob([prompt] * len(completions), completions, names, texts)


class CompareResponse(BaseModel):
    scores: list[float]
    ranking: list[int] = Field(description="Completion indices, best first (ties keep input order).")
    probabilities: list[list[float]] = Field(
        description="P[i][j] = σ(s_i − s_j): the Bradley–Terry probability that completion i beats j (raw rewards)."
    )
    model: str
    truncated: int
    objectives: dict[str, list[float]] | None = OBJECTIVES


class ReloadRequest(_Strict):
    model_dir: Utf8Str | None = Field(
        None,
        description="Bundle to load, inside the model root (RM_MODEL_ROOT; a relative path is taken from there); "
        "default: the configured RM_MODEL_DIR.",
    )
    reward_recipe: Utf8Str | None = Field(
        None, description="A reward recipe to swap in, inside the model root (given alone: only the recipe changes)."
    )


class ReloadResponse(BaseModel):
    model_id: str | None
    previous_model_id: str | None
    bundle: str | None = Field(description="The bundle loaded (null: only the recipe was swapped).")
    reward_recipe: str | None = Field(None, description="The recipe loaded, if one was.")


class ErrorResponse(BaseModel):
    error: str
    type: str
