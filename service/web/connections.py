"""Connection-level guards uvicorn does not have: a deadline for a request's headers, a bound on their size, a JSON
503 past the connection limit, and an open-file limit raised to make room for the connections allowed.

uvicorn closes a connection that stays idle *after* an answer (keep-alive), but not one that never finishes its
headers: a client that opens sockets and trickles bytes (or sends nothing) would hold them, and the process's files,
forever. Here a new connection must deliver its first request's headers within `header_timeout` of opening, and a
kept-alive one a request's headers within `header_timeout` of its first byte (between requests, uvicorn's keep-alive
timeout applies), at most `max_header_bytes` of them; otherwise it gets a JSON 408 / 431 and is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("service.connections")


def _raw_response(status: int, phrase: str, kind: str, message: str) -> bytes:
    body = json.dumps({"error": message, "type": kind}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_UNAVAILABLE = json.dumps({"error": "too many open connections to this server; retry shortly", "type": "overloaded"})


async def _json_unavailable(scope: Any, receive: Any, send: Any) -> None:
    """What a request over the connection limit gets: uvicorn's own answer, as JSON."""
    body = _UNAVAILABLE.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"connection", b"close"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _QuietLimit(logging.Filter):
    """uvicorn logs a warning for every request over the connection limit: under overload that is a log line per
    request (the refusals are counted in rm_rejected_total instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Exceeded concurrency limit."


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a header size bound (set by `guarded`)."""

    header_timeout = 10.0
    max_header_bytes = 65536
    on_refused: Any = None  # called for each request refused over the connection limit

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        started: bytes = getattr(self, "url", b"")
        if self._header_bytes or started:  # a request was started: say why it is cut off
            message = f"request headers not received within {self.header_timeout:g} s"
            self.transport.write(_raw_response(408, "Request Timeout", "timeout", message))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._header_timer is None:  # a kept-alive connection's next request: its headers are due from now
            self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            message = f"request line and headers over {self.max_header_bytes} bytes"
            self.transport.write(_raw_response(431, "Request Header Fields Too Large", "too_large", message))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if app is service_unavailable:
            app = _json_unavailable
            if self.on_refused is not None:
                self.on_refused()
        super()._start_asgi_task(cycle, app)


def guarded(
    header_timeout: float, max_header_bytes: int, on_refused: Callable[[], None] | None = None
) -> type[GuardedProtocol]:
    """The protocol class to give uvicorn, with these limits."""
    logging.getLogger("uvicorn.error").addFilter(_QuietLimit())
    attributes = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes}
    hook = {"on_refused": staticmethod(on_refused)} if on_refused is not None else {}
    return type("GuardedProtocol", (GuardedProtocol,), attributes | hook)


def connection_limit(wanted: int, spare_files: int = 64) -> int:
    """Raise the open-file limit as far as the hard limit allows, and return how many connections fit under it
    (each takes a file; the process keeps `spare_files` for its models, logs and sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + spare_files)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    allowed = max(1, min(wanted, soft - spare_files))
    if allowed < wanted:
        log.warning("RM_MAX_CONNECTIONS=%d lowered to %d: the open-file limit is %d", wanted, allowed, soft)
    return allowed
