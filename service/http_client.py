"""RewardClient / AsyncRewardClient: the service's /score and /compare from Python, httpx only (the reward functions
for trainers built on them are in service.client).

Big lists are sent in chunks; 429, 502-504 and connection errors are retried with exponential backoff (honouring
Retry-After); any other error is raised as RewardServiceError with the server's JSON message. Texts may be strings
or chat messages in the shapes trainers send (content blocks, tool calls: models.messages.plain_message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from models.messages import Text, plain_message

log = logging.getLogger("service.client")
RETRY_STATUS = {429, 502, 503, 504}
OnError = Literal["raise", "none"]


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


def as_text(value: Any, images: str = "refuse") -> Text:
    """A string, or a conversation as plain {role, content} messages (TRL passes either)."""
    if isinstance(value, str):
        return value
    return [plain_message(m, images) for m in value]


class _ClientConfig:
    """Connection settings, chunking and the retry decision shared by the sync and async clients."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 120.0,  # above the server's default RM_MAX_QUEUE_SECONDS (60): admitted means answered
        retries: int = 5,
        chunk_size: int = 256,
        backoff: float = 0.1,
        images: str = "refuse",
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.chunk_size = chunk_size
        self.backoff = backoff
        self.images = images

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

    def _chunks(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        normalize: bool | None,
        references: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        if len(prompts) != len(completions) or (references is not None and len(references) != len(prompts)):
            raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions and references do not pair up")
        items = [
            {"prompt": as_text(p, self.images), "completion": as_text(c, self.images)}
            for p, c in zip(prompts, completions, strict=True)
        ]
        for item, reference in zip(items, references or [], strict=False):
            if reference is not None:
                item["reference"] = reference
        extra = {} if normalize is None else {"normalize": normalize}
        return [{"items": items[i : i + self.chunk_size]} | extra for i in range(0, len(items), self.chunk_size)]


def _pick(answer: dict[str, Any], objective: str | None, component: str | None = None) -> list[float | None]:
    """The scores of a /score answer: the reward, one objective's of a multi-objective model, or one component's of
    the reward recipe."""
    if component is not None:
        components = answer.get("components") or {}
        if component not in components:
            known = ", ".join(components) or "none: the server has no reward recipe"
            raise ValueError(f"the reward has no component {component!r} (it has: {known})")
        return list(components[component])
    if objective is None:
        return list(answer["scores"])
    objectives = answer.get("objectives") or {}
    if objective not in objectives:
        raise ValueError(f"the model has no objective {objective!r} (it has: {', '.join(objectives) or 'one reward'})")
    return list(objectives[objective])


# TRL passes a dataset's columns to reward functions as keyword arguments; these name a sample's reference.
REFERENCE_COLUMNS = ("solution", "answer", "ground_truth", "reference", "tests", "test_cases")


def references_from(columns: dict[str, Any], column: str | None, n: int) -> list[Any] | None:
    """The references among TRL's columns: `column` if named, else the first of REFERENCE_COLUMNS present."""
    if column is None:
        return None
    name = column if column != "auto" else next((c for c in REFERENCE_COLUMNS if c in columns), None)
    if name is None:
        return None
    values = columns.get(name)
    if not isinstance(values, list | tuple) or len(values) != n:
        raise ValueError(f"the dataset column {name!r} must give one reference per completion")
    return list(values)


def _failed(error: RewardServiceError, size: int, on_error: OnError) -> list[float | None]:
    if on_error == "raise":
        raise error
    log.warning("no rewards for %d samples (returned as None): %s", size, error)
    return [None] * size


class RewardClient(_ClientConfig):
    """Blocking client. `with RewardClient(url) as rm: rm.score(prompts, completions)`."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._http = httpx.Client(timeout=self.timeout, headers=self.headers)
        self._last: tuple[str, dict[str, Any]] | None = None

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

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], normalize: bool | None = None) -> list[float]:
        scores: list[float] = []
        for chunk in self._chunks(prompts, completions, normalize):
            scores += self._post("/score", chunk)["scores"]
        return scores

    def score_or_none(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        normalize: bool | None,
        on_error: OnError,
        objective: str | None = None,
        component: str | None = None,
        references: Sequence[Any] | None = None,
    ) -> list[float | None]:
        """Per chunk: its scores, or (on_error="none") None for each of its samples once retries are spent."""
        out: list[float | None] = []
        for chunk in self._chunks(prompts, completions, normalize, references):
            try:
                out += _pick(self._answer(chunk), objective, component)
            except RewardServiceError as e:
                out += _failed(e, len(chunk["items"]), on_error)
        return out

    def _answer(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """The /score answer to `chunk`; the last one is kept, so reward functions sharing this client (one per
        component) ask the service once per batch."""
        key = json.dumps(chunk, sort_keys=True)
        if self._last is None or self._last[0] != key:
            self._last = (key, self._post("/score", chunk))
        return self._last[1]

    def compare(self, prompt: Any, completions: Sequence[Any]) -> dict[str, Any]:
        body = {"prompt": as_text(prompt, self.images), "completions": [as_text(c, self.images) for c in completions]}
        return self._post("/compare", body)

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

    async def score(
        self, prompts: Sequence[Any], completions: Sequence[Any], normalize: bool | None = None
    ) -> list[float]:
        chunks = self._chunks(prompts, completions, normalize)
        results = await asyncio.gather(*(self._post("/score", c) for c in chunks))
        return [s for r in results for s in r["scores"]]

    async def score_or_none(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        normalize: bool | None,
        on_error: OnError,
        objective: str | None = None,
        component: str | None = None,
        references: Sequence[Any] | None = None,
    ) -> list[float | None]:
        chunks = self._chunks(prompts, completions, normalize, references)
        results = await asyncio.gather(*(self._post("/score", c) for c in chunks), return_exceptions=True)
        out: list[float | None] = []
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, RewardServiceError):
                out += _failed(result, len(chunk["items"]), on_error)
            elif isinstance(result, BaseException):
                raise result
            else:
                out += _pick(result, objective, component)
        return out

    async def compare(self, prompt: Any, completions: Sequence[Any]) -> dict[str, Any]:
        body = {"prompt": as_text(prompt, self.images), "completions": [as_text(c, self.images) for c in completions]}
        return await self._post("/compare", body)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
