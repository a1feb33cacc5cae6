"""create_app(config): the annotation web app — static page + JSON API, token auth, strict CSP, admin view."""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .db import annotator_for, connect
from .progress import admin_view, annotator_counts, overall
from .queue import Queue, QueueError
from .strategies import Picker

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "index.html", "/admin": "admin.html"}
ASSETS = {"app.js", "admin.js", "i18n.js", "style.css"}
# Candidate text is untrusted model output: the page only ever sets it with textContent, and this policy forbids
# inline script, inline handlers (<img onerror>), eval, plugins, framing and any other origin besides.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class AppConfig:
    db: Path
    per_item: int
    admin_token: str
    picker: Picker
    lease_seconds: float = 1800.0


class AnswerIn(BaseModel):
    assignment_id: int
    choice: str = Field(pattern="^(A|B|tie|skip)$")
    reason: str = Field(default="", max_length=2000)


class ApiError(HTTPException):
    pass


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing token: send 'Authorization: Bearer TOKEN'")
    return token.strip()


def _config(request: Request) -> AppConfig:
    config: AppConfig = request.app.state.config
    return config


def annotator(request: Request) -> tuple[int, str]:
    """(id, name) of the annotator whose token the request carries."""
    conn = connect(_config(request).db)
    try:
        found = annotator_for(conn, _bearer(request))
    finally:
        conn.close()
    if found is None:
        raise ApiError(401, "unknown token: ask the operator for one (python -m collect add-annotator NAME)")
    return found


def admin(request: Request) -> None:
    # The admin token is separate from every annotator token: an annotator cannot see the others' agreement.
    if not hmac.compare_digest(_bearer(request).encode(), _config(request).admin_token.encode()):
        raise ApiError(403, "not the admin token")


Who = Annotated[tuple[int, str], Depends(annotator)]


def create_app(config: AppConfig) -> FastAPI:
    app = FastAPI(title="rlhf-reward preference collection", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    queue = Queue(lambda: connect(config.db), config.per_item, config.lease_seconds)

    def me_view(who: tuple[int, str]) -> dict[str, Any]:
        conn = connect(config.db)
        try:
            counts = next((c for c in annotator_counts(conn) if c["name"] == who[1]), {})
            return {"name": who[1], "counts": counts, "progress": overall(conn, config.per_item)}
        finally:
            conn.close()

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(QueueError)
    async def queue_error(request: Request, exc: QueueError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse({"error": f"{where or 'body'}: {first['msg']}"}, 422)

    @app.exception_handler(sqlite3.OperationalError)
    async def busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        return JSONResponse({"error": f"database busy, try again: {exc}"}, 503, headers={"Retry-After": "1"})

    for route, page in PAGES.items():

        def serve_page(page: str = page) -> FileResponse:
            return FileResponse(STATIC / page, media_type="text/html; charset=utf-8")

        app.get(route, include_in_schema=False)(serve_page)

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise ApiError(404, "no such file")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(STATIC / name, media_type=f"{kind}; charset=utf-8")

    @app.get("/api/me")
    def me(who: Who) -> dict[str, Any]:
        return me_view(who)

    @app.get("/api/next")
    def next_pair(who: Who) -> dict[str, Any]:
        showing = queue.next(who[0], config.picker)
        view = me_view(who)
        if showing is None:
            return {"done": True, **view}
        pair = {"assignment_id": showing.assignment_id, "prompt": showing.prompt, "a": showing.a, "b": showing.b}
        return {"done": False, "pair": pair, **view}

    @app.post("/api/answer")
    def answer(body: AnswerIn, who: Who) -> dict[str, Any]:
        # The 200 goes out only after the answer's transaction has committed (fsynced: synchronous=FULL).
        answer_id = queue.answer(who[0], body.assignment_id, body.choice, body.reason.strip())
        return {"ok": True, "answer_id": answer_id}

    @app.post("/api/undo")
    def undo(who: Who) -> dict[str, Any]:
        return {"ok": True, "item_id": queue.undo(who[0])}

    @app.get("/api/admin/stats", dependencies=[Depends(admin)])
    def stats() -> dict[str, Any]:
        conn = connect(config.db)
        try:
            return {**admin_view(conn, config.per_item), "strategy": config.picker.status()}
        finally:
            conn.close()

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # browsers ask for it; an empty answer keeps their consoles clean

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
