"""RewardClient (sync and async, httpx only) and reward_fn, a TRL GRPOTrainer reward function backed by the service.

Big lists are sent in chunks; 429, 503 and connection errors are retried with exponential backoff (honouring
Retry-After); any other error is raised as RewardServiceError with the server's JSON message.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

Text = str | Sequence[Mapping[str, str]]
RETRY_STATUS = {429, 502, 503, 504}


class RewardServiceError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _error(response: httpx.Response) -> RewardServiceError:
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text
    return RewardServiceError(response.status_code, message)


def _delay(attempt: int, response: httpx.Response | None, backoff: float) -> float:
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after:
        try:
            return min(float(retry_after), 30.0)
        except ValueError:
            pass
    return min(backoff * 2**attempt, 10.0) * (0.5 + random.random())  # jitter spreads a thundering herd


def _as_text(value: Any) -> Text:
    """Plain strings or conversational messages (TRL passes either)."""
    if isinstance(value, str):
        return value
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


class _ClientConfig:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        chunk_size: int = 256,
        backoff: float = 0.1,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.chunk_size = chunk_size
        self.backoff = backoff

    def _settle(self, attempt: int, response: httpx.Response | None, error: Exception | None) -> dict[str, Any] | None:
        """A 200's body; None to retry (429/5xx/unreachable); raises when the error is final or retries are spent."""
        last = attempt == self.retries
        if response is None:
            if last:
                raise RewardServiceError(0, f"cannot reach {self.url}: {error}") from error
            return None
        if response.status_code == 200:
            result: dict[str, Any] = response.json()
            return result
        if response.status_code not in RETRY_STATUS or last:
            raise _error(response)
        return None

    def _chunks(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[dict[str, Any]]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        items = [{"prompt": _as_text(p), "completion": _as_text(c)} for p, c in zip(prompts, completions, strict=True)]
        return [{"items": items[i : i + self.chunk_size]} for i in range(0, len(items), self.chunk_size)]


class RewardClient(_ClientConfig):
    """Blocking client. `with RewardClient(url) as rm: rm.score(prompts, completions)`."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._http = httpx.Client(timeout=self.timeout, headers=self.headers)

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            response, error = None, None
            try:
                response = self._http.post(self.url + path, json=payload)
            except httpx.TransportError as e:
                error = e
            result = self._settle(attempt, response, error)
            if result is not None:
                return result
            time.sleep(_delay(attempt, response, self.backoff))
        raise AssertionError("unreachable")

    def score(self, prompts: Sequence[Text], completions: Sequence[Text], normalize: bool = False) -> list[float]:
        scores: list[float] = []
        for chunk in self._chunks(prompts, completions):
            scores += self._post("/score", chunk | {"normalize": normalize})["scores"]
        return scores

    def compare(self, prompt: Text, completions: Sequence[Text]) -> dict[str, Any]:
        return self._post("/compare", {"prompt": _as_text(prompt), "completions": [_as_text(c) for c in completions]})

    def info(self) -> dict[str, Any]:
        response = self._http.get(self.url + "/info")
        if response.status_code != 200:
            raise _error(response)
        result: dict[str, Any] = response.json()
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRewardClient(_ClientConfig):
    """asyncio client; chunks of one call are sent concurrently (the server batches them together)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            response, error = None, None
            try:
                response = await self._http.post(self.url + path, json=payload)
            except httpx.TransportError as e:
                error = e
            result = self._settle(attempt, response, error)
            if result is not None:
                return result
            await asyncio.sleep(_delay(attempt, response, self.backoff))
        raise AssertionError("unreachable")

    async def score(self, prompts: Sequence[Text], completions: Sequence[Text], normalize: bool = False) -> list[float]:
        chunks = self._chunks(prompts, completions)
        results = await asyncio.gather(*(self._post("/score", c | {"normalize": normalize}) for c in chunks))
        return [s for r in results for s in r["scores"]]

    async def compare(self, prompt: Text, completions: Sequence[Text]) -> dict[str, Any]:
        payload = {"prompt": _as_text(prompt), "completions": [_as_text(c) for c in completions]}
        return await self._post("/compare", payload)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def reward_fn(url: str, normalize: bool = False, **client_kwargs: Any) -> Callable[..., list[float]]:
    """A reward function for TRL's GRPOTrainer: `GRPOTrainer(reward_funcs=[reward_fn(url)], ...)`.

    TRL calls it as f(prompts=..., completions=..., **columns) with plain strings or, for conversational
    datasets, lists of messages; it returns one float per completion.
    """
    client = RewardClient(url, **client_kwargs)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return client.score(list(prompts), list(completions), normalize=normalize)

    reward.__name__ = "remote_reward_model"  # TRL logs rewards under the function's name
    return reward
