"""The team, as the operator manages it: annotators listed and revoked, and the vote quorum kept with the labels."""

from __future__ import annotations

import secrets
import time
from typing import Any

from .agreement import Quorum
from .db import StoreError, transaction
from .store import Connection

REVOKED = "revoked:"  # a token hash no token can have: a revoked annotator keeps their name and answers


def list_annotators(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT name, token_hash, created FROM annotators ORDER BY name").fetchall()
    return [
        {"name": r["name"], "created": float(r["created"]), "revoked": str(r["token_hash"]).startswith(REVOKED)}
        for r in rows
    ]


def revoke_annotator(conn: Connection, name: str) -> None:
    """The annotator's token stops working at once and the pair they hold goes back to the pool; their answers
    stay (they were given in good faith; drop them at export time if they should not count)."""
    with transaction(conn):
        row = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no annotator named {name!r}")
        conn.execute(
            "UPDATE annotators SET token_hash = ? WHERE id = ?", (REVOKED + secrets.token_hex(16), int(row[0]))
        )
        conn.execute(
            "UPDATE assignments SET state = 'expired' WHERE annotator_id = ? AND state = 'open'", (int(row[0]),)
        )


def save_quorum(conn: Connection, quorum: Quorum) -> None:
    """Kept with the labels, so an export (another process, maybe another day) reports disputes by the same rule."""
    with transaction(conn):
        for key, value in (("per_item", quorum.per_item), ("majority", quorum.majority), ("most", quorum.most)):
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"quorum.{key}", str(value)),
            )
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ("quorum.saved", str(time.time())),
        )


def load_quorum(conn: Connection, default_per_item: int = 3) -> Quorum:
    rows = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'quorum.%'").fetchall()
    found = {str(r[0]).removeprefix("quorum."): str(r[1]) for r in rows}
    if not {"per_item", "majority", "most"} <= found.keys():
        return Quorum.of(default_per_item)
    return Quorum.of(int(found["per_item"]), int(found["majority"]), int(found["most"]))
