"""Read-only views of the labels database: overall progress, per-annotator counts and the live votes."""

from __future__ import annotations

import sqlite3
from typing import Any

from .agreement import group_votes, summary


def overall(conn: sqlite3.Connection, per_item: int) -> dict[str, Any]:
    """Slots filled (an item has `per_item` slots; extra answers past that do not count) and items complete."""
    row = conn.execute(
        """SELECT COUNT(*) AS items, COALESCE(SUM(MIN(n, :k)), 0) AS done, COALESCE(SUM(n >= :k), 0) AS complete
           FROM (SELECT i.id, (SELECT COUNT(*) FROM answers a WHERE a.item_id = i.id AND a.undone IS NULL
                                 AND a.choice != 'skip') AS n FROM items i)""",
        {"k": per_item},
    ).fetchone()
    total = int(row["items"]) * per_item
    return {
        "items": int(row["items"]),
        "items_complete": int(row["complete"]),
        "answers_needed": total,
        "answers_done": int(row["done"]),
        "fraction": round(int(row["done"]) / total, 4) if total else 1.0,
        "annotations_per_item": per_item,
    }


def annotator_counts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every annotator's live answers, skips and undone clicks (issued annotators with none show zeros)."""
    rows = conn.execute(
        """SELECT n.name,
                  COALESCE(SUM(a.undone IS NULL AND a.choice != 'skip'), 0) AS answered,
                  COALESCE(SUM(a.undone IS NULL AND a.choice = 'skip'), 0) AS skipped,
                  COALESCE(SUM(a.undone IS NOT NULL), 0) AS undone,
                  COALESCE(SUM(a.undone IS NULL AND a.choice = 'tie'), 0) AS ties
           FROM annotators n LEFT JOIN answers a ON a.annotator_id = n.id GROUP BY n.id ORDER BY n.name"""
    ).fetchall()
    return [dict(r) for r in rows]


def live_votes(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    """(item, annotator name, winner in the item's canonical orientation) for every live, non-skip answer."""
    rows = conn.execute(
        """SELECT a.item_id, n.name, a.winner FROM answers a JOIN annotators n ON n.id = a.annotator_id
           WHERE a.undone IS NULL AND a.choice != 'skip' ORDER BY a.item_id, a.id"""
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def admin_view(conn: sqlite3.Connection, per_item: int) -> dict[str, Any]:
    return {
        "progress": overall(conn, per_item),
        "annotators": annotator_counts(conn),
        "agreement": summary(group_votes(live_votes(conn))),
    }
