"""Error types -> HTTP status + JSON body `{"error", "type", ...}`, in one table, and the handlers that apply it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("service.errors")


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


def error_body(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "type": kind, **extra}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the handlers: every error leaves as JSON, never as an HTML page or a bare 500."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, **exc.extra), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return await _unparseable_body(request, errors[0])
        details = []
        for err in errors:
            detail = {"field": _field(tuple(err.get("loc", ()))), "message": str(err.get("msg", "invalid"))}
            details.append(detail)
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        return JSONResponse(error_body(message, "invalid_request", details=details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # e.g. invalid UTF-8
            message = "request body is not valid JSON text (it must be UTF-8 encoded JSON)"
        return JSONResponse(error_body(message, kind), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body("internal error", "internal_error"), 500)


async def _unparseable_body(request: Request, err: dict[str, Any]) -> JSONResponse:
    """A body that is not JSON: say whether it was not even UTF-8 (400) or not JSON (422), and where."""
    body = await request.body()  # already read and cached by the router
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"request body is not valid UTF-8 (byte {e.start}); send UTF-8 encoded JSON"
        return JSONResponse(error_body(message, "invalid_body"), 400)
    reason = str((err.get("ctx") or {}).get("error", "")) or "malformed"
    message = f"body: JSON decode error ({reason})"
    return JSONResponse(error_body(message, "invalid_request", details=[{"field": "body", "message": message}]), 422)
