"""Request and response models. Types are strict (no "1" for true, no numbers for text). Each scoring request says
which texts it carries (`texts()`, with field names) and which pairs it scores (`pairs()`): size limits depend on
settings, so Pipeline.score checks them there and these models stay static for the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictStr, field_validator

from models.messages import Text

from .openrlhf import RewardPair, to_pair


def _no_lone_surrogates(text: str) -> str:
    # JSON allows "\ud800"; such a string cannot become UTF-8, which the tokenizer needs.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains an unpaired UTF-16 surrogate (invalid Unicode)") from None
    return text


Utf8Str = Annotated[StrictStr, AfterValidator(_no_lone_surrogates)]  # a string that can become UTF-8 (every text)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr

    _check = field_validator("role", "content")(_no_lone_surrogates)


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
        return _no_lone_surrogates(value)
    return value


class ScoreItem(_Strict):
    prompt: TextField
    completion: TextField

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

    def texts(self) -> list[tuple[str, Text]]:
        named = [(f"items.{i}.prompt", to_text(it.prompt)) for i, it in enumerate(self.items)]
        return named + [(f"items.{i}.completion", to_text(it.completion)) for i, it in enumerate(self.items)]

    def pairs(self) -> tuple[list[Text], list[Text]]:
        return [to_text(it.prompt) for it in self.items], [to_text(it.completion) for it in self.items]

    def pair_field(self, i: int) -> str:
        return f"items.{i}"


OBJECTIVES = Field(
    None, description="Multi-objective models only: each objective's raw reward per pair (absent for one reward)."
)


class ScoreResponse(BaseModel):
    scores: list[float]
    model: str
    truncated: int = Field(description="How many pairs were cut to the model's max length (prompt's left first).")
    objectives: dict[str, list[float]] | None = OBJECTIVES


class CompareRequest(_Strict):
    prompt: TextField
    completions: list[TextField] = Field(min_length=2, description="Two or more completions of the same prompt.")
    normalize: StrictBool | None = Field(None, description="As in /score (default: RM_NORMALIZE).")
    weights: Weights = None

    def texts(self) -> list[tuple[str, Text]]:
        return [("prompt", to_text(self.prompt))] + [
            (f"completions.{i}", to_text(c)) for i, c in enumerate(self.completions)
        ]

    def pairs(self) -> tuple[list[Text], list[Text]]:
        return [to_text(self.prompt)] * len(self.completions), [to_text(c) for c in self.completions]

    def pair_field(self, i: int) -> str:
        return f"completions.{i}"

    _check_prompt = field_validator("prompt")(_check_text)

    @field_validator("completions")
    @classmethod
    def _check_completions(cls, values: list[str | list[ChatMessage]]) -> list[str | list[ChatMessage]]:
        return [_check_text(v) for v in values]


class CompareResponse(BaseModel):
    scores: list[float]
    ranking: list[int] = Field(description="Completion indices, best first (ties keep input order).")
    probabilities: list[list[float]] = Field(
        description="P[i][j] = σ(s_i − s_j): the Bradley–Terry probability that completion i beats j (raw rewards)."
    )
    model: str
    truncated: int
    objectives: dict[str, list[float]] | None = OBJECTIVES


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward-model protocol (--reward.remote_url): see service.openrlhf for how each query becomes
    the pair the model scores."""

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
    _pairs: list[RewardPair] | None = PrivateAttr(None)

    @field_validator("query", "prompts")
    @classmethod
    def _check_strings(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else [_no_lone_surrogates(v) for v in values]

    def texts(self) -> list[tuple[str, Text]]:
        return [(f"query.{i}", q) for i, q in enumerate(self.query)]

    def reward_pairs(self) -> list[RewardPair]:
        """How each query splits (computed once)."""
        if self._pairs is None:
            prompts = self.prompts or []
            self._pairs = [to_pair(q, prompts[i] if i < len(prompts) else None) for i, q in enumerate(self.query)]
        return self._pairs

    def pairs(self) -> tuple[list[Text], list[Text]]:
        pairs = self.reward_pairs()
        return [p.prompt for p in pairs], [p.completion for p in pairs]

    def pair_field(self, i: int) -> str:
        return f"query.{i}"


class RewardResponse(BaseModel):
    rewards: list[float] = Field(description="One reward per query (normalised when asked).")
    scores: list[float] = Field(description="The same values (OpenRLHF reads `scores`, then `rewards`).")
    extra_logs: dict[str, list[float]] = Field(
        description="Numbers OpenRLHF logs per sample: `raw_reward` (before normalising) and `truncated` (1 when the "
        "pair was cut to the model's max length)."
    )


class ReloadRequest(_Strict):
    model_dir: Utf8Str | None = Field(
        None,
        description="Bundle to load, inside the model root (RM_MODEL_ROOT; a relative path is taken from there); "
        "default: the configured RM_MODEL_DIR.",
    )


class ReloadResponse(BaseModel):
    model_id: str
    previous_model_id: str | None
    bundle: str


class ErrorResponse(BaseModel):
    error: str
    type: str
