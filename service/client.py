"""Reward functions for trainers backed by the service: RewardFunction / AsyncRewardFunction for TRL (GRPOTrainer,
RLOOTrainer, OnlineDPOTrainer) and VerlScore for verl; the HTTP clients they use are re-exported from
service.http_client (RewardClient, AsyncRewardClient).

Big lists are sent in chunks; 429, 502-504 and connection errors are retried with exponential backoff (honouring
Retry-After); any other error is raised as RewardServiceError with the server's JSON message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .http_client import (
    REFERENCE_COLUMNS,
    AsyncRewardClient,
    OnError,
    RewardClient,
    RewardServiceError,
    as_text,
    references_from,
)

__all__ = [
    "REFERENCE_COLUMNS",
    "AsyncRewardClient",
    "AsyncRewardFunction",
    "RewardClient",
    "RewardFunction",
    "RewardServiceError",
    "VerlScore",
    "as_text",
    "reward_fn",
]


class RewardFunction:
    """A TRL reward function backed by the service: `GRPOTrainer(reward_funcs=[RewardFunction(url)], ...)`.

    TRL calls it as f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns) with strings
    or conversations (content strings or blocks, tool calls) and logs under its `__name__` (`name`: give two
    servers two names). Failure policy, after the client's retries: `on_error="raise"` (default) fails the
    training step with the server's message; `"none"` returns None for the samples it could not score, which
    TRL turns into NaN and leaves out of the advantage. Picklable (TRL's async GRPO runs reward functions in a
    child process): the HTTP client is made on first use, in the process and event loop that uses it.
    `objective="helpful"` rewards with one head of a multi-objective model (raw, whatever `normalize` says).
    With a reward recipe on the server, each sample's reference is the dataset column `reference_column` ("auto":
    the first of solution, answer, ground_truth, reference, tests, test_cases) and `component="math"` rewards with
    one component; `RewardFunction.per_component(url, ["model", "math"])` gives one function per component, logged
    by TRL under its own name and asking the service once per batch for all of them.
    """

    def __init__(
        self,
        url: str,
        name: str = "reward_model",
        normalize: bool | None = None,
        on_error: OnError = "raise",
        images: str = "refuse",
        objective: str | None = None,
        component: str | None = None,
        reference_column: str | None = "auto",
        **client_kwargs: Any,
    ) -> None:
        if on_error not in ("raise", "none"):
            raise ValueError(f"on_error must be 'raise' or 'none', not {on_error!r}")
        self.url, self.__name__, self.normalize, self.on_error = url, name, normalize, on_error
        self.objective = objective  # a multi-objective model's head to reward with (None: the combined reward)
        self.component = component  # a reward recipe's component to reward with (None: the combined reward)
        self.reference_column = reference_column
        self.client_kwargs = client_kwargs | {"images": images}
        self._client: Any = None
        self._shared: list[Any] | None = None  # [client] shared by functions made by per_component

    @classmethod
    def per_component(cls, url: str, components: Sequence[str], **kwargs: Any) -> list[RewardFunction]:
        """One reward function per recipe component, named after it, sharing one client (and its last answer)."""
        shared: list[Any] = [None]
        functions = [cls(url, name=c, component=c, **kwargs) for c in components]
        for function in functions:
            function._shared = shared
        return functions

    def _made(self, make: Any) -> Any:
        if self._shared is not None:
            if self._shared[0] is None:
                self._shared[0] = make()
            return self._shared[0]
        if self._client is None:
            self._client = make()
        return self._client

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        client = self._made(lambda: RewardClient(self.url, **self.client_kwargs))
        references = references_from(kwargs, self.reference_column, len(completions))
        return list(
            client.score_or_none(
                prompts, completions, self.normalize, self.on_error, self.objective, self.component, references
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_client": None, "_shared": [None] if self._shared is not None else None}


class AsyncRewardFunction(RewardFunction):
    """The same as a coroutine: TRL runs async reward functions concurrently on its own event loop, so requests to
    several reward servers overlap. The client belongs to the loop that first awaits it."""

    _loop: Any = None

    async def __call__(  # type: ignore[override]
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = AsyncRewardClient(self.url, **self.client_kwargs), loop
        references = references_from(kwargs, self.reference_column, len(completions))
        return list(
            await self._client.score_or_none(
                prompts, completions, self.normalize, self.on_error, self.objective, self.component, references
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_client": None, "_loop": None, "_shared": None}


def reward_fn(url: str, **kwargs: Any) -> RewardFunction:
    """`RewardFunction(url, **kwargs)`: the reward function for TRL trainers."""
    return RewardFunction(url, **kwargs)


class VerlScore:
    """verl's `compute_score(data_source, solution_str, ground_truth, extra_info)` backed by the service: the reward
    recipe's combined reward and each component (`{"score": ..., "math": ..., ...}`, which verl logs), the response
    checked against `ground_truth`. Point verl's `custom_reward_function` at a module that defines
    `compute_score = VerlScore("http://HOST:8000")`. The prompt is `extra_info["question"]` when verl has it."""

    def __init__(self, url: str, **client_kwargs: Any) -> None:
        self.url, self.client_kwargs = url, client_kwargs
        self._client: RewardClient | None = None

    def __call__(
        self, data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None
    ) -> dict[str, float]:
        if self._client is None:
            self._client = RewardClient(self.url, **self.client_kwargs)
        prompt = str((extra_info or {}).get("question", ""))
        [chunk] = self._client._chunks([prompt], [solution_str], None, [ground_truth])
        answer = self._client._post("/score", chunk)
        score = answer["scores"][0]
        result = {"score": 0.0 if score is None else float(score)}
        for name, values in (answer.get("components") or {}).items():
            result[name] = 0.0 if values[0] is None else float(values[0])
        return result

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_client": None}
