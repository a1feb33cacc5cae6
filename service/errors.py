"""Error types -> HTTP status + JSON body in one table, answered in the dialect of the path: ours, vLLM's or TEI's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("service.errors")

Dialect = Literal["ours", "vllm", "tei"]
BodyRule = Callable[[Any], Dialect]
# path -> its dialect, and for a path two protocols share (/score, /rerank) the rule that reads it off the body.
# The adapter modules register their paths (speak); every other path answers in ours.
_PATHS: dict[str, tuple[Dialect, BodyRule | None]] = {}


def speak(path: str, dialect: Dialect, by_body: BodyRule | None = None) -> None:
    """Answer errors on `path` in `dialect`, or in the one `by_body(parsed JSON body)` names once the body is read."""
    _PATHS[path] = (dialect, by_body)


def path_dialect(path: str) -> Dialect:
    """The dialect of a path before its body is read."""
    return _PATHS.get(path, ("ours", None))[0]


def shares_path(path: str) -> bool:
    """Whether two dialects share `path`, so that only the body tells which one a request speaks."""
    return _PATHS.get(path, ("ours", None))[1] is not None


def body_dialect(path: str, body: Any) -> Dialect:
    """The dialect of a request on `path` with this parsed JSON body."""
    dialect, by_body = _PATHS.get(path, ("ours", None))
    return dialect if by_body is None else by_body(body)


async def note_dialect(request: Request) -> None:
    """Dependency, first on a shared path's route: FastAPI has read (and cached) the JSON body by then, so the errors
    raised before the body is validated (401, 503) are answered in the body's dialect too."""
    by_body = _PATHS.get(request.scope["path"], ("ours", None))[1]
    if by_body is not None:
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8: the validation error will say so
            body = None
        request.state.dialect = by_body(body)


_UNREAD = object()


def dialect_of(request: Request, body: Any = _UNREAD) -> Dialect:
    dialect, by_body = _PATHS.get(request.scope["path"], ("ours", None))
    if by_body is None:
        return dialect
    if body is not _UNREAD:
        return by_body(body)
    noted: Dialect = getattr(request.state, "dialect", dialect)
    return noted


class ApiError(Exception):
    """Base of every error the service answers on purpose."""

    status = 400
    kind = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class InvalidInput(ApiError):
    status, kind = 422, "invalid_request"


class TooLarge(ApiError):
    status, kind = 413, "too_large"


class Unauthorized(ApiError):
    status, kind = 401, "unauthorized"


class Forbidden(ApiError):
    status, kind = 403, "forbidden"


class Overloaded(ApiError):
    status, kind = 429, "overloaded"


class NotReady(ApiError):
    status, kind = 503, "not_ready"


class ReloadRefused(ApiError):
    status, kind = 422, "reload_refused"


class InferenceFailed(ApiError):
    status, kind = 500, "inference_failed"


class ClientDisconnected(Exception):
    """The client went away before its answer: its work is dropped, nothing is answered, nothing is logged as a
    server error (the request is counted with status 499)."""


class Empty(ApiError):
    """TEI's own 400: an empty input or an empty `texts` list."""

    status, kind = 400, "empty"


def error_body(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "type": kind, **extra}


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


# Our errors in the other dialects, as the closest status and type each server has (vLLM 0.34
# serve/exception_handling; TEI 1.9.3 router/src/lib.rs ErrorType and server.rs ErrorType -> StatusCode).
# vLLM answers every invalid request 400 (it has no 413 or 422): our limits (413) and checks (422) become 400
# BadRequestError, a failed batch 500 InternalServerError, not ready 503 ServiceUnavailableError; anything else
# keeps its status, typed with its HTTP phrase ("Unauthorized", "Too Many Requests"), as vLLM's HTTP handler does.
# TEI answers an invalid or too large request 422 Validation (its batch-size and token limits are Validation), an
# empty one 400 Empty, overload 429 Overloaded, not ready 503 Unhealthy, a failed batch 424 Backend; TEI has no
# type for the rest (its 401 has no body), which keep their status with our kind in TEI's PascalCase.
_VLLM: dict[str, tuple[int, str]] = {
    "invalid_body": (400, "BadRequestError"),
    "invalid_request": (400, "BadRequestError"),
    "validation": (400, HTTPStatus.BAD_REQUEST.phrase),  # vLLM types its request validation errors "Bad Request"
    "too_large": (400, "BadRequestError"),
    "empty": (400, "BadRequestError"),
    "not_ready": (503, "ServiceUnavailableError"),
    "inference_failed": (500, "InternalServerError"),
    "internal_error": (500, "InternalServerError"),
}
_TEI: dict[str, tuple[int, str]] = {
    "invalid_body": (422, "Validation"),
    "invalid_request": (422, "Validation"),
    "validation": (422, "Validation"),
    "too_large": (422, "Validation"),
    "empty": (400, "Empty"),
    "overloaded": (429, "Overloaded"),
    "not_ready": (503, "Unhealthy"),
    "inference_failed": (424, "Backend"),
    "internal_error": (424, "Backend"),
}


def error_response(
    dialect: Dialect, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """One error as `dialect` writes it: ours `{"error", "type", ...}`, vLLM's `{"error": {"message", "type",
    "param", "code"}}` or TEI's `{"error", "error_type"}`."""
    message, extra = printable(message), printable(extra)
    if dialect == "vllm":
        status, type_ = _VLLM.get(kind, (status, HTTPStatus(status).phrase))
        info = {"message": message, "type": type_, "param": extra.get("field"), "code": status}
        return JSONResponse({"error": info}, status, headers=headers)
    if dialect == "tei":
        status, type_ = _TEI.get(kind, (status, kind.title().replace("_", "")))
        return JSONResponse({"error": message, "error_type": type_}, status, headers=headers)
    if kind == "validation":
        kind = "invalid_request"
    return JSONResponse(error_body(message, kind, **extra), status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    # "<...>" parts are the tags of a union routed on the body's shape (service.vllm, service.tei), not fields.
    parts = [str(p) for p in loc if p != "body" and not str(p).startswith("<")]
    return ".".join(parts) or "body"


def _param(loc: tuple[Any, ...]) -> str:
    """vLLM's `param`: the field, without pydantic's union-member parts ("str", "list[str]", "function-after[...]")."""
    parts = [p for p in _field(loc).split(".") if not any(c in p for c in "[]()") and p not in ("str", "int")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the handlers: every error leaves as JSON, never as an HTML page or a bare 500."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(dialect_of(request), exc.status, exc.kind, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        dialect = dialect_of(request, exc.body)
        if errors and errors[0].get("type") == "json_invalid":
            return await _unparseable_body(request, errors[0], dialect)
        details = []
        for err in errors:
            detail = {"field": _field(tuple(err.get("loc", ()))), "message": str(err.get("msg", "invalid"))}
            details.append(detail)
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        if dialect == "vllm":
            lines = "".join(f"\n  {_param(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:10])
            message = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}:{lines}"
            param = _param(tuple(errors[0].get("loc", ()))) if errors else None
            return error_response(dialect, 400, "validation", message, field=param)
        if dialect == "tei":
            first_error = errors[0] if errors else {}
            message = f"{_param(tuple(first_error.get('loc', ())))}: {first_error.get('msg', 'invalid request')}"
            return error_response(dialect, 422, "validation", f"Input validation error: {message}")
        return error_response(dialect, 422, "validation", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 408: "timeout", 413: "too_large"}
        kind = kinds.get(exc.status_code, "invalid_request" if exc.status_code == 422 else "http_error")
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # e.g. invalid UTF-8
            message = "request body is not valid JSON text (it must be UTF-8 encoded JSON)"
        return error_response(dialect_of(request), exc.status_code, kind, message, exc.headers)

    # Anything else is answered by service.middleware.CatchAll: a handler registered for Exception would run in
    # Starlette's outermost layer, which re-raises to the server after answering and so drops the connection.


async def _unparseable_body(request: Request, err: dict[str, Any], dialect: Dialect) -> JSONResponse:
    """A body that is not JSON: say whether it was not even UTF-8 (400) or not JSON (422), and where."""
    body = await request.body()  # already read and cached by the router
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"request body is not valid UTF-8 (byte {e.start}); send UTF-8 encoded JSON"
        return error_response(dialect, 400, "invalid_body", message)
    reason = str((err.get("ctx") or {}).get("error", "")) or "malformed"
    message = f"body: JSON decode error ({reason})"
    return error_response(dialect, 422, "invalid_request", message, details=[{"field": "body", "message": message}])
