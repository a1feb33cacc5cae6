"""Request and response models. Types are strict (no "1" for true, no numbers for text); size limits that
depend on settings are checked in service.limits, so these models stay static for the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator


def _no_lone_surrogates(text: str) -> str:
    # JSON allows "\ud800"; such a string cannot become UTF-8, which the tokenizer needs.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains an unpaired UTF-16 surrogate (invalid Unicode)") from None
    return text


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr

    _check = field_validator("role", "content")(_no_lone_surrogates)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Annotated[
    StrictStr | list[Message],
    Field(description="A string, or a list of {role, content} messages (the conversational format)."),
]


def _check_text(value: str | list[Message]) -> str | list[Message]:
    if isinstance(value, str):
        return _no_lone_surrogates(value)
    return value


class ScoreItem(_Strict):
    prompt: Text
    completion: Text

    _check = field_validator("prompt", "completion")(_check_text)


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(min_length=1, description="Pairs to score; rewards come back in this order.")
    normalize: StrictBool = Field(False, description="Return (r − mean) / std with the bundle's eval statistics.")


class ScoreResponse(BaseModel):
    scores: list[float]
    model: str
    truncated: int = Field(description="How many pairs were cut to the model's max length (prompt's left first).")


class CompareRequest(_Strict):
    prompt: Text
    completions: list[Text] = Field(min_length=2, description="Two or more completions of the same prompt.")
    normalize: StrictBool = False

    _check_prompt = field_validator("prompt")(_check_text)

    @field_validator("completions")
    @classmethod
    def _check_completions(cls, values: list[str | list[Message]]) -> list[str | list[Message]]:
        return [_check_text(v) for v in values]


class CompareResponse(BaseModel):
    scores: list[float]
    ranking: list[int] = Field(description="Completion indices, best first (ties keep input order).")
    probabilities: list[list[float]] = Field(
        description="P[i][j] = σ(s_i − s_j): the Bradley–Terry probability that completion i beats j (raw rewards)."
    )
    model: str
    truncated: int


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward-model protocol (--remote_rm_url)."""

    model_config = ConfigDict(extra="ignore")  # OpenRLHF also sends fields such as `labels`

    query: list[StrictStr] = Field(min_length=1, description="Full prompt + response strings.")
    prompts: list[StrictStr] | None = Field(None, description="Each query's prompt prefix, removed before scoring.")

    @field_validator("query", "prompts")
    @classmethod
    def _check_strings(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else [_no_lone_surrogates(v) for v in values]


class RewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


class ReloadRequest(_Strict):
    model_dir: StrictStr | None = Field(None, description="Bundle to load; default: the configured RM_MODEL_DIR.")


class ReloadResponse(BaseModel):
    model_id: str
    previous_model_id: str | None
    bundle: str


class ErrorResponse(BaseModel):
    error: str
    type: str
