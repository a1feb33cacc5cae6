"""Read-only views of the labels database: overall progress, per-annotator counts and the live votes."""

from __future__ import annotations

import statistics
from typing import Any

from .agreement import Quorum, group_votes, summary
from .store import Connection


def overall(conn: Connection, quorum: Quorum) -> dict[str, Any]:
    """Votes collected against votes wanted: each pair wants `per_item`, a disputed one as many as the quorum now
    asks (one more at a time), so a split pair is not "complete" while it waits; votes past that do not count."""
    labels: dict[int, list[str]] = {int(r[0]): [] for r in conn.execute("SELECT id FROM items").fetchall()}
    for item, _, label in live_votes(conn):
        labels.setdefault(item, []).append(label)
    wanted = {item: quorum.slots(votes) for item, votes in labels.items()}
    done = sum(min(len(labels[item]), k) for item, k in wanted.items())
    total = sum(wanted.values())
    return {
        "items": len(labels),
        "items_complete": sum(len(labels[item]) >= k for item, k in wanted.items()),
        "answers_needed": total,
        "answers_done": done,
        "fraction": round(done / total, 4) if total else 1.0,
        "annotations_per_item": quorum.per_item,
    }


def annotator_counts(conn: Connection) -> list[dict[str, Any]]:
    """Every annotator's live answers, skips and undone clicks (issued annotators with none show zeros)."""
    rows = conn.execute(
        """SELECT n.name,
                  COUNT(*) FILTER (WHERE a.undone IS NULL AND a.choice != 'skip') AS answered,
                  COUNT(*) FILTER (WHERE a.undone IS NULL AND a.choice = 'skip') AS skipped,
                  COUNT(*) FILTER (WHERE a.undone IS NOT NULL) AS undone,
                  COUNT(*) FILTER (WHERE a.undone IS NULL AND a.choice = 'tie') AS ties
           FROM annotators n LEFT JOIN answers a ON a.annotator_id = n.id GROUP BY n.id ORDER BY n.name"""
    ).fetchall()
    return [dict(r) for r in rows]


def live_votes(conn: Connection) -> list[tuple[int, str, str]]:
    """(item, annotator name, winner in the item's canonical orientation) for every live, non-skip answer."""
    rows = conn.execute(
        """SELECT a.item_id, n.name, a.winner FROM answers a JOIN annotators n ON n.id = a.annotator_id
           WHERE a.undone IS NULL AND a.choice != 'skip' ORDER BY a.item_id, a.id"""
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


IDLE_CAP = 600.0  # a pair open longer than this was left on screen (a break): count it as this long


def pace(conn: Connection) -> dict[str, dict[str, float | None]]:
    """Per annotator: median seconds from a pair being shown to its answer, and pairs per hour of working time
    (each pair's time capped at IDLE_CAP, so a lunch break does not count as work)."""
    rows = conn.execute(
        """SELECT n.name, a.created - s.issued AS took FROM answers a JOIN assignments s ON s.id = a.assignment_id
           JOIN annotators n ON n.id = a.annotator_id WHERE a.undone IS NULL AND a.choice != 'skip'"""
    ).fetchall()
    took: dict[str, list[float]] = {}
    for name, seconds in rows:
        took.setdefault(str(name), []).append(min(max(float(seconds), 0.0), IDLE_CAP))
    found: dict[str, dict[str, float | None]] = {}
    for name, times in took.items():
        working = sum(times)
        found[name] = {
            "median_seconds_per_pair": round(statistics.median(times), 1),
            "pairs_per_hour": round(3600 * len(times) / working, 1) if working > 0 else None,
        }
    return found


def disagreements(conn: Connection, limit: int | None = 200) -> list[dict[str, Any]]:
    """Pairs whose live votes differ, newest vote first, each vote with its annotator, label and reason."""
    rows = conn.execute(
        """SELECT a.item_id, n.name, a.winner, a.reason, a.created, p.text AS prompt, f.text AS first,
                  c.text AS second
           FROM answers a JOIN annotators n ON n.id = a.annotator_id JOIN items i ON i.id = a.item_id
           JOIN prompts p ON p.id = i.prompt_id JOIN completions f ON f.id = i.first_id
           JOIN completions c ON c.id = i.second_id
           WHERE a.undone IS NULL AND a.choice != 'skip' ORDER BY a.item_id, a.id"""
    ).fetchall()
    items: dict[int, dict[str, Any]] = {}
    for r in rows:
        item = items.setdefault(
            int(r["item_id"]),
            {"item": int(r["item_id"]), "prompt": r["prompt"], "first": r["first"], "second": r["second"], "votes": []},
        )
        item["votes"].append({"annotator": r["name"], "label": r["winner"], "reason": r["reason"], "at": r["created"]})
    split = [i for i in items.values() if len({v["label"] for v in i["votes"]}) > 1]
    split.sort(key=lambda i: -max(v["at"] for v in i["votes"]))
    return split if limit is None else split[:limit]


def admin_view(conn: Connection, quorum: Quorum) -> dict[str, Any]:
    votes = group_votes(live_votes(conn))
    speed = pace(conn)
    return {
        "progress": overall(conn, quorum),
        "annotators": [{**c, **speed.get(c["name"], {})} for c in annotator_counts(conn)],
        "agreement": summary(votes),
        "disputes": quorum.report(votes),
        "disagreements": disagreements(conn),
    }
