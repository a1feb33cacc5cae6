"""The operator's API (admin token only): progress, agreement, disputes with reasons, exports, annotators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from .db import StoreError, add_annotator, connect
from .deps import ApiError, Config, admin
from .export import FORMATS, ExportError, export
from .progress import admin_view
from .ranking import kendall_agreement
from .team import list_annotators, revoke_annotator

router = APIRouter(prefix="/api/admin", dependencies=[Depends(admin)])
EXTENSIONS = {"tutorial": "json", "trl": "jsonl", "ranked": "jsonl", "votes": "jsonl", "rankings": "jsonl"}


class NewAnnotator(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    rotate: bool = False


@router.get("/stats")
def stats(config: Config) -> dict[str, Any]:
    conn = connect(config.db)
    try:
        return {
            **admin_view(conn, config.quorum),
            "rankings": kendall_agreement(conn),
            "strategy": config.picker.status(),
        }
    finally:
        conn.close()


@router.get("/export")
def download(config: Config, format: str = "tutorial", keep_ties: bool = False, min_votes: int = 1) -> Response:
    """The same file `python -m collect export` writes, as a download; its report in the X-Export-Report header
    would be too long, so the counts go in X-Export-Records and the full report stays a CLI matter."""
    if format not in FORMATS:
        raise ApiError(422, f"format: choose from {', '.join(FORMATS)}")
    if not 1 <= min_votes <= 1000:
        raise ApiError(422, "min_votes: between 1 and 1000")
    conn = connect(config.db)
    try:
        text, report = export(conn, format, keep_ties, min_votes)
    except ExportError as e:
        raise ApiError(422, str(e)) from None
    finally:
        conn.close()
    name = f"preferences-{format}.{EXTENSIONS[format]}"
    media = "application/json" if EXTENSIONS[format] == "json" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Export-Records": str(report["records"])}
    return Response(text.encode("utf-8"), media_type=f"{media}; charset=utf-8", headers=headers)


@router.get("/annotators")
def annotators(config: Config) -> dict[str, Any]:
    conn = connect(config.db)
    try:
        return {"annotators": list_annotators(conn)}
    finally:
        conn.close()


@router.post("/annotators")
def add(body: NewAnnotator, config: Config) -> dict[str, Any]:
    """A new token (or a rotated one), shown once: only its hash is kept."""
    conn = connect(config.db)
    try:
        token = add_annotator(conn, body.name, body.rotate)
    except StoreError as e:
        raise ApiError(409 if "already exists" in str(e) else 422, str(e)) from None
    finally:
        conn.close()
    return {"name": body.name.strip(), "token": token}


@router.delete("/annotators/{name}")
def revoke(name: str, config: Config) -> dict[str, Any]:
    conn = connect(config.db)
    try:
        revoke_annotator(conn, name)
    except StoreError as e:
        raise ApiError(404, str(e)) from None
    finally:
        conn.close()
    return {"name": name, "revoked": True}
