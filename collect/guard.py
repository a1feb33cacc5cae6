"""Pure-ASGI protections, before any work: a body cap, security headers on every answer, and a limit on failed
logins per client address. (Starlette's BaseHTTPMiddleware would turn the cap's 413 into a generic 400.)"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_CLIENTS = 10_000  # addresses with recent failed logins kept before the quiet ones are forgotten
MAX_BODY_BYTES = 256 * 1024  # an answer with its 2,000-character reason is under 10 KB; admin bodies are smaller


async def _json(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The client may still be sending: say so, so it stops instead of waiting on a socket nobody reads.
    head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Bodies over `max_bytes` get a JSON 413 before anyone reads them whole: a declared length is refused at once,
    a streamed one as soon as it passes the limit. FastAPI reads a body before its dependencies check the token, so
    without this a 1 GB body with no token was held in memory before its 401."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body is over the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _json(send, 413 if declared.isdigit() else 400, too_large if declared.isdigit() else "bad length")
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises an HTTPException met while reading a body (any other becomes its 400),
                    # so the app's own handler answers this one.
                    raise HTTPException(413, too_large)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except HTTPException as e:
            if started:
                raise
            await _json(send, e.status_code, str(e.detail))


class SecurityHeaders:
    """The same headers on every answer, errors and 404s included."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class FailedLogins:
    """At most `limit` failed logins per client address in any `window` seconds; past it, answers 429 until the
    oldest failure leaves the window. Tokens are 32 random bytes, so this is not about guessing them; it stops a
    client hammering the database with lookups and makes a leaked-token scan slow and visible."""

    def __init__(self, limit: int = 20, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) < self.limit:
                if not failures:
                    self._failures.pop(client, None)  # memory stays bounded by the clients failing right now
                return 0
            return max(1, int(failures[0] + self.window - now + 0.999))

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)
            if len(self._failures) > MAX_CLIENTS:  # a scan from many addresses: forget the ones gone quiet
                for quiet in [c for c, f in self._failures.items() if f[-1] <= now - self.window]:
                    del self._failures[quiet]
