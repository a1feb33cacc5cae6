"""Which dialect answers on which path, and the exception handlers that answer every error in it.

Each protocol (service.protocols) renders a failure in its own dialect: ours `{"error", "type"}`, vLLM's
`{"error": {"message", "type", "param", "code"}}`, TEI's `{"error", "error_type"}`. The registry is built by
create_app, one entry per protocol path; on a path two protocols share (POST /score, POST /rerank) the body's keys
decide, by the one table in service.protocols.common.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import Kind, ServiceError


@dataclass(frozen=True)
class Failure:
    """One error to answer, whatever raised it."""

    kind: Kind
    message: str
    field: str | None = None
    status: int | None = None  # an HTTP status the kind does not imply (a StarletteHTTPException's own)
    details: list[dict[str, str]] | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Dialect(Protocol):
    """A protocol's way of writing errors."""

    name: str

    def render(self, failure: Failure) -> JSONResponse: ...

    def validation(self, errors: Sequence[Mapping[str, Any]]) -> Failure: ...


def printable(value: Any) -> Any:
    """`value` with every string made encodable as UTF-8: a message may repeat what the client sent, and a lone
    surrogate in it (valid in JSON text, not in UTF-8) would otherwise fail the answer itself."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


def failure_of(error: ServiceError, extra_headers: Mapping[str, str] | None = None) -> Failure:
    headers = dict(extra_headers or {})
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.kind is Kind.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    return Failure(error.kind, printable(error.message), printable(error.field), headers=headers)


_UNREAD = object()


class Dialects:
    """The registry: a dialect per path (`default` for paths no protocol registered), or a chooser reading the
    parsed body on a path two protocols share."""

    def __init__(self, default: Dialect) -> None:
        self.default = default
        self._by_path: dict[str, Dialect] = {}
        self._by_body: dict[str, Callable[[Any], Dialect]] = {}

    def register(self, paths: Iterable[str], dialect: Dialect) -> None:
        for path in paths:
            self._by_path[path] = dialect

    def share(self, path: str, choose: Callable[[Any], Dialect]) -> None:
        self._by_body[path] = choose
        self._by_path[path] = choose(None)  # before the body is read: the path's first-named dialect

    def of_path(self, path: str) -> Dialect:
        return self._by_path.get(path, self.default)

    def shares(self, path: str) -> bool:
        return path in self._by_body

    def of_body(self, path: str, body: Any) -> Dialect:
        choose = self._by_body.get(path)
        return self.of_path(path) if choose is None else choose(body)

    def of_request(self, request: Request, body: Any = _UNREAD) -> Dialect:
        path = request.scope["path"]
        if path not in self._by_body:
            return self.of_path(path)
        if body is not _UNREAD:
            return self.of_body(path, body)
        noted: Dialect = getattr(request.state, "dialect", self.of_path(path))
        return noted


async def note_dialect(request: Request) -> None:
    """Dependency, first on a shared path's route: FastAPI has read (and cached) the JSON body by then, so the errors
    raised before the body is validated (503) are answered in the body's dialect too."""
    dialects: Dialects = request.app.state.dialects
    path = request.scope["path"]
    if dialects.shares(path):
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8: the validation error will say so
            body = None
        request.state.dialect = dialects.of_body(path, body)


def install(app: FastAPI, dialects: Dialects) -> None:
    """Register the handlers: every error leaves as JSON in its path's dialect, never as an HTML page or a bare 500.
    (Anything else is answered by web.middleware.CatchAll: a handler registered for Exception would run in
    Starlette's outermost layer, which re-raises to the server after answering and so drops the connection.)"""
    app.state.dialects = dialects

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return dialects.of_request(request).render(failure_of(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        dialect = dialects.of_request(request, exc.body)
        if errors and errors[0].get("type") == "json_invalid":
            return dialect.render(await _unparseable_body(request, errors[0]))
        return dialect.render(dialect.validation(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {
            400: Kind.INVALID_BODY,
            404: Kind.NOT_FOUND,
            405: Kind.METHOD_NOT_ALLOWED,
            408: Kind.TIMEOUT,
            413: Kind.TOO_LARGE,
            422: Kind.INVALID,
        }
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # e.g. invalid UTF-8
            message = "request body is not valid JSON text (it must be UTF-8 encoded JSON)"
        kind = kinds.get(exc.status_code, Kind.INVALID)
        failure = Failure(kind, printable(message), status=exc.status_code, headers=dict(exc.headers or {}))
        return dialects.of_request(request).render(failure)


async def _unparseable_body(request: Request, err: Mapping[str, Any]) -> Failure:
    """A body that is not JSON: say whether it was not even UTF-8 (400) or not JSON (422), and where."""
    body = await request.body()  # already read and cached by the router
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return Failure(Kind.INVALID_BODY, f"request body is not valid UTF-8 (byte {e.start}); send UTF-8 encoded JSON")
    reason = str((err.get("ctx") or {}).get("error", "")) or "malformed"
    message = f"body: JSON decode error ({reason})"
    return Failure(Kind.INVALID, message, details=[{"field": "body", "message": message}])


def field_of(loc: Sequence[Any]) -> str:
    """A pydantic error location as a dotted field ("<...>" parts are the tags of a union routed on the body's shape,
    not fields)."""
    parts = [str(p) for p in loc if p != "body" and not str(p).startswith("<")]
    return ".".join(parts) or "body"


def param_of(loc: Sequence[Any]) -> str:
    """The field without pydantic's union-member parts ("str", "list[str]", "function-after[...]")."""
    parts = [p for p in field_of(loc).split(".") if not any(c in p for c in "[]()") and p not in ("str", "int")]
    return ".".join(parts) or "body"
