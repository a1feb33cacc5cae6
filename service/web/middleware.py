"""Pure ASGI middleware, outermost first: no exception leaves the app, request metrics, keys checked before any body
is read, overload refused before any body is read, and the body's size and read deadline.

Cheap checks come first: an unauthenticated or oversized request is answered from its headers, before the body is
read or parsed, so it costs the server nothing that a client without a key can inflate.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable

from pydantic import SecretStr
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import ClientDisconnected, Kind, ServiceError
from ..core.metrics import Metrics
from .dialects import Dialect, Dialects, Failure, failure_of

log = logging.getLogger("service.middleware")
# Answered without a key: probes, metrics, model info and the API docs. Every other path needs the API key (when one
# is set), so a route added later is protected unless it is declared public here.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/info", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PATHS |= {"/openapi.json"}
ADMIN_PREFIX = "/admin/"
CLIENT_CLOSED = 499  # nginx's code for a request whose client went away before the answer: not a server error
# On a path two dialects share, an unauthenticated body this small is read to answer 401 in its dialect; a bigger
# one is answered in the path's default dialect without reading it.
PEEK_BYTES = 64 * 1024
RETRY = {"Retry-After": "1"}


def _status_kind(status: int) -> str:
    """rm_rejected's reason for a refused request."""
    kinds = {401: "unauthorized", 403: "forbidden", 408: "timeout", 413: "too_large", 429: "overloaded"}
    if status in kinds:
        return kinds[status]
    return "not_ready" if status == 503 else "invalid"


class CatchAll:
    """The outermost layer: an exception no handler took becomes a JSON 500 in the path's dialect, and is not
    re-raised to the server (which would drop the client's keep-alive connection after the answer). A client that
    went away gets nothing: there is nobody to answer."""

    def __init__(self, app: ASGIApp, dialects: Dialects) -> None:
        self.app = app
        self.dialects = dialects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnected:
            return
        except asyncio.CancelledError:  # the server's own shutdown backstop cut this request: say so, in JSON
            if not started:
                failure = Failure(Kind.NOT_READY, "shutting down: the request was cut off; retry", headers=RETRY)
                await self.dialects.of_path(scope["path"]).render(failure)(scope, receive, send)
            raise
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            if not started:
                failure = Failure(Kind.INTERNAL, "internal error")
                await self.dialects.of_path(scope["path"]).render(failure)(scope, receive, send)


class RequestMetrics:
    """Requests by endpoint and status, their latency, and refusals by reason."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints  # the app's route paths; any other path is counted as "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500
        started = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except ClientDisconnected:
            status = CLIENT_CLOSED
            raise
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)
            if 400 <= status < 500 and status not in (404, 405, CLIENT_CLOSED):
                self.metrics.rejected.labels(_status_kind(status)).inc()


def bearer_matches(scope: Scope, key: SecretStr) -> bool:
    """Whether the request carries `key` as its bearer token; compared in constant time."""
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.get_secret_value().encode())


class Auth:
    """The API key on every non-public path and the admin key on /admin/*, read from the headers only."""

    def __init__(
        self, app: ASGIApp, dialects: Dialects, api_key: SecretStr | None, admin_key: SecretStr | None
    ) -> None:
        self.app = app
        self.dialects = dialects
        self.api_key = api_key
        self.admin_key = admin_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if path.startswith(ADMIN_PREFIX):
            if self.admin_key is None:
                message = "admin endpoints are disabled on this server (set RM_ADMIN_API_KEY to enable them)"
                await self._refuse(scope, receive, send, Kind.FORBIDDEN, message)
                return
            if not bearer_matches(scope, self.admin_key):
                await self._refuse(scope, receive, send, Kind.UNAUTHORIZED, "missing or invalid admin key")
                return
        elif self.api_key is not None and not bearer_matches(scope, self.api_key):
            await self._refuse(scope, receive, send, Kind.UNAUTHORIZED, "missing or invalid API key")
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, kind: Kind, message: str) -> None:
        dialect = self.dialects.of_path(scope["path"])
        read = False
        headers = {}
        if kind is Kind.UNAUTHORIZED:
            message += " (send 'Authorization: Bearer KEY')"
            headers["WWW-Authenticate"] = "Bearer"
            if self.dialects.shares(scope["path"]):
                dialect, read = await _peeked_dialect(scope, receive, self.dialects, dialect)
        if not read and _has_body(scope):
            headers["Connection"] = "close"  # the body stays unread: close rather than wait for the rest of it
        await dialect.render(Failure(kind, message, headers=headers))(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers


async def _peeked_dialect(scope: Scope, receive: Receive, dialects: Dialects, default: Dialect) -> tuple[Dialect, bool]:
    """(The dialect a small JSON body speaks on a shared path, whether the body was read whole); `default` for a
    big, slow or unparseable one."""
    declared = dict(scope["headers"]).get(b"content-length", b"")
    if not declared.isdigit() or int(declared) > PEEK_BYTES:
        return default, False
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(1.0):
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body") or sum(map(len, chunks)) > PEEK_BYTES:
                    break
    except TimeoutError:
        return default, False
    try:
        return dialects.of_body(scope["path"], json.loads(b"".join(chunks))), True
    except ValueError:
        return default, True


class Admission:
    """While the queue is already past its time limit, a scoring request is refused from its headers: under overload
    refusals outnumber answers, and a 429 decided before the body is read, parsed and validated leaves the CPU to
    the requests that were admitted. (The exact decision, for the request's own pairs, is the batcher's.)"""

    def __init__(self, app: ASGIApp, dialects: Dialects, refusal: Callable[[], ServiceError | None]) -> None:
        self.app = app
        self.dialects = dialects
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in PUBLIC_PATHS and not path.startswith(ADMIN_PREFIX):
            refused = self.refusal()
            if refused is not None:
                unread = {"Connection": "close"} if _has_body(scope) else None  # the body stays unread
                await self.dialects.of_path(path).render(failure_of(refused, unread))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Bodies over the limit get a JSON 413, whether declared up front or streamed; a body that does not arrive
    within the read deadline gets a JSON 408 (a client trickling bytes cannot hold a connection and a task)."""

    def __init__(self, app: ASGIApp, dialects: Dialects, max_bytes: int, read_seconds: float) -> None:
        self.app = app
        self.dialects = dialects
        self.max_bytes = max_bytes
        self.read_seconds = read_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = f"request body of {int(declared)} bytes is over the limit of {self.max_bytes}"
            failure = Failure(Kind.TOO_LARGE, message, headers={"Connection": "close"})
            await self.dialects.of_path(scope["path"]).render(failure)(scope, receive, send)
            return
        received = 0
        complete = False
        deadline = time.monotonic() + self.read_seconds

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # after the body only a disconnect can come: wait for it as long as it takes
                return await receive()
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                    message = await receive()
            except TimeoutError:
                # Raised while FastAPI reads the body, an HTTPException reaches our JSON handlers.
                raise HTTPException(
                    408, f"request body not received within {self.read_seconds:g} s", {"Connection": "close"}
                ) from None
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if received > self.max_bytes:
                raise HTTPException(413, f"request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)
