"""create_app(config): the annotation web app — static page + JSON API, token auth, strict CSP, admin view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from . import admin_api
from .db import BUSY_ERRORS, connect
from .deps import ApiError, AppConfig, Who
from .guard import BodyLimit, SecurityHeaders
from .progress import annotator_counts, overall
from .queue import Queue, QueueError
from .ranking import RankShowing
from .team import save_quorum

__all__ = ["AppConfig", "create_app"]

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "index.html", "/admin": "admin.html"}
ASSETS = {"app.js", "admin.js", "i18n.js", "style.css", "markdown.js", "rank.js"}
# Candidate text is untrusted model output: the page only ever sets it with textContent, and this policy forbids
# inline script, inline handlers (<img onerror>), eval, plugins, framing and any other origin besides.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_ID = 2**63 - 1  # the databases' integer: a bigger id is a client's mistake (422), not an OverflowError (500)


class RankIn(BaseModel):
    """A ranking screen's answer: the letters shown, best first (or `skip`), for the pairs it was leased as."""

    assignment_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=3, max_length=6)
    order: list[str] = Field(default_factory=list, max_length=4)
    reason: str = Field(default="", max_length=2000)
    skip: bool = False


class AnswerIn(BaseModel):
    assignment_id: int = Field(ge=1, le=MAX_ID)
    choice: str = Field(pattern="^(A|B|tie|skip)$")
    reason: str = Field(default="", max_length=2000)


def create_app(config: AppConfig) -> FastAPI:
    app = FastAPI(title="rlhf-reward preference collection", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    queue = Queue(lambda: connect(config.db), config.quorum, config.lease_seconds, config.rankings)
    conn = connect(config.db)
    try:
        save_quorum(conn, config.quorum)
    finally:
        conn.close()

    def me_view(who: tuple[int, str]) -> dict[str, Any]:
        conn = connect(config.db)
        try:
            counts = next((c for c in annotator_counts(conn) if c["name"] == who[1]), {})
            return {"name": who[1], "counts": counts, "progress": overall(conn, config.quorum)}
        finally:
            conn.close()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(QueueError)
    async def queue_error(request: Request, exc: QueueError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse({"error": f"{where or 'body'}: {first['msg']}"}, 422)

    async def busy(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"database busy, try again: {exc}"}, 503, headers={"Retry-After": "1"})

    for busy_error in BUSY_ERRORS:  # SQLite busy; PostgreSQL away, lock timeout, serialization failure
        app.add_exception_handler(busy_error, busy)

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
        if isinstance(showing, RankShowing):
            ranking = {
                "assignment_ids": list(showing.assignment_ids),
                "prompt": showing.prompt,
                "answers": list(showing.answers),
            }
            return {"done": False, "ranking": ranking, **view}
        pair = {"assignment_id": showing.assignment_id, "prompt": showing.prompt, "a": showing.a, "b": showing.b}
        return {"done": False, "pair": pair, **view}

    @app.post("/api/answer")
    def answer(body: AnswerIn, who: Who) -> dict[str, Any]:
        # The 200 goes out only after the answer's transaction has committed (fsynced: synchronous=FULL).
        answer_id = queue.answer(who[0], body.assignment_id, body.choice, body.reason.strip())
        return {"ok": True, "answer_id": answer_id}

    @app.post("/api/rank")
    def rank(body: RankIn, who: Who) -> dict[str, Any]:
        ranking = queue.rank(who[0], body.assignment_ids, body.order, body.reason.strip(), body.skip)
        return {"ok": True, "ranking_id": ranking}

    @app.post("/api/undo")
    def undo(who: Who) -> dict[str, Any]:
        return {"ok": True, "item_id": queue.undo(who[0])}

    @app.get("/api/guidelines")
    def guidelines(who: Who) -> dict[str, str]:
        return {"en": config.guidelines.get("en", ""), "zh": config.guidelines.get("zh", "")}

    app.include_router(admin_api.router)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # browsers ask for it; an empty answer keeps their consoles clean

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(SecurityHeaders, headers=SECURITY_HEADERS)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # added last: the outermost, before anything
    return app
