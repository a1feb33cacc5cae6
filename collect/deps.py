"""Who is asking: the app's settings, annotator and admin tokens, and the failed-login limit, as FastAPI deps."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from .agreement import Quorum
from .db import annotator_for, connect
from .guard import MAX_BODY_BYTES, FailedLogins
from .store import Location
from .strategies import Picker


@dataclass
class AppConfig:
    db: Location  # a SQLite file or a postgresql:// URL
    per_item: int
    admin_token: str
    picker: Picker
    lease_seconds: float = 1800.0
    majority: int | None = None  # votes a pair's leading label needs; default a strict majority of per_item
    most_per_item: int | None = None  # annotators a disputed pair may get; default per_item + 2
    guidelines: dict[str, str] = field(default_factory=dict)  # language -> Markdown
    max_body_bytes: int = MAX_BODY_BYTES
    rankings: bool = False  # prompts with 3-4 answers are ranked on one screen
    failed_logins: FailedLogins = field(default_factory=FailedLogins)

    @property
    def quorum(self) -> Quorum:
        return Quorum.of(self.per_item, self.majority, self.most_per_item)


class ApiError(HTTPException):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)


def config(request: Request) -> AppConfig:
    found: AppConfig = request.app.state.config
    return found


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _bearer(request: Request) -> str:
    limits = config(request).failed_logins
    wait = limits.retry_after(_client(request))
    if wait:  # before the token is even looked at: a client over the limit costs no database lookup
        raise ApiError(
            429, f"too many failed logins from this address; try again in {wait} s", {"Retry-After": str(wait)}
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing token: send 'Authorization: Bearer TOKEN'")
    return token.strip()


def _refuse(request: Request, status: int, message: str) -> ApiError:
    config(request).failed_logins.failed(_client(request))
    return ApiError(status, message)


def annotator(request: Request) -> tuple[int, str]:
    """(id, name) of the annotator whose token the request carries."""
    token = _bearer(request)
    conn = connect(config(request).db)
    try:
        found = annotator_for(conn, token)
    finally:
        conn.close()
    if found is None:
        raise _refuse(request, 401, "unknown token: ask the operator for one (python -m collect add-annotator NAME)")
    return found


def admin(request: Request) -> None:
    # The admin token is separate from every annotator token: an annotator cannot see the others' agreement.
    if not hmac.compare_digest(_bearer(request).encode(), config(request).admin_token.encode()):
        raise _refuse(request, 403, "not the admin token")


Who = Annotated[tuple[int, str], Depends(annotator)]
Config = Annotated[AppConfig, Depends(config)]
