"""JSON request bodies parsed with bounds: how many values, how deep, how long a number.

FastAPI parses a body with the plain `json.loads`; a body inside the size limit can still hold millions of tiny values
(each a Python object, many times its bytes in memory), nest until the parser gives up, or carry a 5,000-digit
integer that Python refuses to convert. Every route here parses through `BoundedJSONRoute`, which answers those with
a 413 or 422 that says what was wrong, instead of a misleading "not valid JSON".
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

MAX_VALUES = 1_000_000  # values (strings, numbers, objects, arrays, ...) in one body
MAX_NUMBER_DIGITS = 50  # an integer's digits; no reward-model request needs more
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _value_count(body: bytes) -> int:
    """An upper bound on the values in a JSON text: separators and openings, counted outside strings only when
    the quick count (which also sees commas inside strings) is over the limit."""
    quick = body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    if quick <= MAX_VALUES:
        return quick
    skeleton = _STRING.sub(b'""', body)  # strings emptied: what is left is structure and numbers
    return skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{") + 1


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _Refused(422, f"body: a number with more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse(body: bytes) -> Any:
    """The JSON value of `body`, or an HTTPException (413 / 422) naming the bound it breaks; a body that is simply
    not JSON raises json.JSONDecodeError, as json.loads does."""
    if _value_count(body) > MAX_VALUES:
        raise HTTPException(413, f"body: more than {MAX_VALUES:,} JSON values")
    try:
        return json.loads(body, parse_int=_bounded_int)
    except _Refused as e:
        raise HTTPException(e.status, e.message) from None
    except RecursionError:
        raise HTTPException(422, "body: JSON nested too deeply (the parser's limit is about 1,000 levels)") from None


class BoundedJSONRoute(APIRoute):
    """A route whose JSON body is parsed by `parse` before FastAPI reads it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def bounded(request: Request) -> Response:
            if takes_body and (body := await request.body()):
                with contextlib.suppress(ValueError):  # not JSON, or not UTF-8: FastAPI's own parse says why
                    # Starlette's Request.json() returns this cached value: the one object the exception
                    # handlers see too, so the body is read and parsed once.
                    request._json = parse(body)
            return await handler(request)

        return bounded
