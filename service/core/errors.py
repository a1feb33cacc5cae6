"""What can go wrong, as kinds (as TEI's error enum): no status codes here; each protocol renders a kind in its own
dialect (service.protocols.*.render_error)."""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    INVALID = "invalid_request"  # the request is well-formed JSON but cannot be served as asked
    VALIDATION = "validation"  # the body does not fit the request schema
    INVALID_BODY = "invalid_body"  # the body is not UTF-8 JSON text
    EMPTY = "empty"  # an empty input (TEI has its own answer for it)
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    TIMEOUT = "timeout"  # the body did not arrive in time
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    OVERLOADED = "overloaded"
    NOT_READY = "not_ready"
    RELOAD_REFUSED = "reload_refused"
    INFERENCE_FAILED = "inference_failed"
    INTERNAL = "internal_error"


class ServiceError(Exception):
    """Every error the service answers on purpose: a kind, a message for the client, the field at fault (if any) and,
    for a refusal that will pass, how many seconds until a retry may succeed."""

    kind = Kind.INVALID

    def __init__(self, message: str, field: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after


class InvalidInput(ServiceError):
    kind = Kind.INVALID


class Empty(ServiceError):
    kind = Kind.EMPTY


class TooLarge(ServiceError):
    kind = Kind.TOO_LARGE


class Unauthorized(ServiceError):
    kind = Kind.UNAUTHORIZED


class Forbidden(ServiceError):
    kind = Kind.FORBIDDEN


class Overloaded(ServiceError):
    kind = Kind.OVERLOADED


class NotReady(ServiceError):
    kind = Kind.NOT_READY


class ReloadRefused(ServiceError):
    kind = Kind.RELOAD_REFUSED


class InferenceFailed(ServiceError):
    kind = Kind.INFERENCE_FAILED


class ClientDisconnected(Exception):
    """The client went away before its answer: its work is dropped, nothing is answered, nothing is logged as a
    server error (the request is counted with status 499)."""
