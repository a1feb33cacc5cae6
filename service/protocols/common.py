"""What the protocols share: the status each error kind has by default, the one table that tells the dialects of a
shared path apart, JSON answers, the disconnect watch, σ(reward), and a lone text read as a (prompt, completion)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Annotated, Any, ClassVar, TypeVar

import numpy as np
from fastapi import Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr, model_validator

from models.messages import Text

from ..core.errors import ClientDisconnected, Kind
from .rollouts import to_pair

T = TypeVar("T")

# The status a kind has in our dialect, and in the others where they have nothing closer.
STATUS: dict[Kind, int] = {
    Kind.INVALID: 422,
    Kind.VALIDATION: 422,
    Kind.INVALID_BODY: 400,
    Kind.EMPTY: 400,
    Kind.TOO_LARGE: 413,
    Kind.UNAUTHORIZED: 401,
    Kind.FORBIDDEN: 403,
    Kind.TIMEOUT: 408,
    Kind.NOT_FOUND: 404,
    Kind.METHOD_NOT_ALLOWED: 405,
    Kind.OVERLOADED: 429,
    Kind.NOT_READY: 503,
    Kind.RELOAD_REFUSED: 422,
    Kind.INFERENCE_FAILED: 500,
    Kind.INTERNAL: 500,
}

# The paths two protocols share, and how a body says which it speaks: a JSON object naming any of these keys is
# the first protocol's, anything else the second's. POST /score: vLLM's (queries, documents, data_1, data_2,
# text_1, text_2) or ours (`items`); POST /rerank: vLLM's (`documents`) or TEI's (`texts`).
SHARED_PATHS: dict[str, tuple[frozenset[str], str, str]] = {
    "/score": (frozenset({"queries", "documents", "data_1", "data_2", "text_1", "text_2"}), "vllm", "native"),
    "/rerank": (frozenset({"documents"}), "vllm", "tei"),
}


def shared_dialect(path: str, body: Any) -> str:
    """The protocol a body on a shared path speaks (None, an unread or unparsable body: the path's second)."""
    keys, first, second = SHARED_PATHS[path]
    return first if isinstance(body, dict) and not keys.isdisjoint(body) else second


def no_lone_surrogates(text: str) -> str:
    # JSON allows "\ud800"; such a string cannot become UTF-8, which the tokenizer needs.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains an unpaired UTF-16 surrogate (invalid Unicode)") from None
    return text


Utf8Str = Annotated[StrictStr, AfterValidator(no_lone_surrogates)]  # a string that can become UTF-8 (every text)


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


def status_phrase(status: int) -> str:
    return HTTPStatus(status).phrase


def json_response(payload: Any) -> Response:
    # allow_nan=False: a NaN reward is a fault to surface, not invalid JSON to send.
    return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued pairs) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnected()
    return task.result()


def activated(raw: np.ndarray, on: bool) -> list[float]:
    """σ(reward) in float64 when `on` (vLLM's and TEI's default for a one-label classifier), else the raw reward."""
    if not on:
        values: list[float] = raw.tolist()
        return values
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-raw.astype(np.float64)))).tolist()


def lone_text_pair(text: str) -> tuple[Text, Text]:
    """One whole text as (prompt, completion), as /get_reward reads a query sent without its prompt: a policy's chat
    markup or an hh-style transcript becomes the conversation, anything else the completion of an empty prompt."""
    pair = to_pair(text, None)
    return pair.prompt, pair.completion
