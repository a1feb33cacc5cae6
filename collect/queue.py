"""The annotation queue: lease the next pair to an annotator, record answers (acknowledged = committed), undo."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .db import transaction

CHOICES = ("A", "B", "tie", "skip")
Order = Callable[[Sequence[sqlite3.Row]], list[int]]  # available items -> item ids, most wanted first


class QueueError(ValueError):
    """An answer or undo that cannot be applied; `status` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Showing:
    assignment_id: int
    item_id: int
    prompt: str
    a: str
    b: str
    a_is_first: bool


# An item's used slots: answers (non-skip) plus other people's leases that have not lapsed.
AVAILABLE = """
SELECT i.id, i.prompt_id, i.first_id, i.second_id FROM items i
WHERE (SELECT COUNT(*) FROM assignments s WHERE s.item_id = i.id
       AND (s.state = 'answered' OR (s.state = 'open' AND s.issued > :cutoff))) < :k
  AND NOT EXISTS (SELECT 1 FROM assignments s WHERE s.item_id = i.id AND s.annotator_id = :me
                  AND s.state != 'expired')
ORDER BY i.id
"""


class Queue:
    """Every read and write of the annotation state; one instance per server, thread-safe (one connection each)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], per_item: int, lease_seconds: float) -> None:
        self.connect = connect
        self.per_item = per_item
        self.lease_seconds = lease_seconds
        self.rng = random.Random()

    def available(self, conn: sqlite3.Connection, annotator: int) -> list[sqlite3.Row]:
        params = {"cutoff": time.time() - self.lease_seconds, "k": self.per_item, "me": annotator}
        return conn.execute(AVAILABLE, params).fetchall()

    def _show(self, conn: sqlite3.Connection, assignment_id: int) -> Showing:
        row = conn.execute(
            """SELECT s.id, s.item_id, s.a_is_first, p.text AS prompt, f.text AS first, c.text AS second
               FROM assignments s JOIN items i ON i.id = s.item_id JOIN prompts p ON p.id = i.prompt_id
               JOIN completions f ON f.id = i.first_id JOIN completions c ON c.id = i.second_id WHERE s.id = ?""",
            (assignment_id,),
        ).fetchone()
        a, b = (row["first"], row["second"]) if row["a_is_first"] else (row["second"], row["first"])
        return Showing(row["id"], row["item_id"], row["prompt"], a, b, bool(row["a_is_first"]))

    def _own_open(self, conn: sqlite3.Connection, annotator: int) -> int | None:
        """The annotator's open lease (a reload shows the same pair, same sides); a lapsed one only if room is left."""
        row = conn.execute(
            "SELECT id, item_id, issued FROM assignments WHERE annotator_id = ? AND state = 'open' "
            "ORDER BY issued DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        if row is None:
            return None
        now = time.time()
        if row["issued"] > now - self.lease_seconds:
            return int(row["id"])
        used = conn.execute(
            "SELECT COUNT(*) FROM assignments WHERE item_id = ? AND id != ? "
            "AND (state = 'answered' OR (state = 'open' AND issued > ?))",
            (row["item_id"], row["id"], now - self.lease_seconds),
        ).fetchone()[0]
        if used < self.per_item:
            conn.execute("UPDATE assignments SET issued = ? WHERE id = ?", (now, row["id"]))
            return int(row["id"])
        conn.execute("UPDATE assignments SET state = 'expired' WHERE id = ?", (row["id"],))
        return None

    def next(self, annotator: int, order: Order) -> Showing | None:
        """Lease the next item to `annotator`, in the strategy's order; None when nothing is left for them.

        The strategy ranks outside the write lock (it may ask the reward service); the claim re-checks, inside
        BEGIN IMMEDIATE, that the item still has a free slot, so concurrent annotators never over-fill an item.
        """
        conn = self.connect()
        try:
            with transaction(conn):
                own = self._own_open(conn, annotator)
            if own is not None:
                return self._show(conn, own)
            wanted = order(self.available(conn, annotator))
            with transaction(conn):
                free = {int(r["id"]) for r in self.available(conn, annotator)}
                if not free:
                    return None
                # Someone may have taken the wanted items meanwhile: the first still free, else any free one.
                item = next((i for i in wanted if i in free), None) or self.rng.choice(sorted(free))
                a_is_first = self.rng.random() < 0.5  # sides randomised per showing, recorded with it
                conn.execute(
                    """INSERT INTO assignments (item_id, annotator_id, a_is_first, state, issued)
                       VALUES (?, ?, ?, 'open', ?) ON CONFLICT (item_id, annotator_id)
                       DO UPDATE SET state = 'open', issued = excluded.issued, a_is_first = excluded.a_is_first""",
                    (item, annotator, int(a_is_first), time.time()),
                )
                assignment = conn.execute(
                    "SELECT id FROM assignments WHERE item_id = ? AND annotator_id = ?", (item, annotator)
                ).fetchone()[0]
            return self._show(conn, assignment)
        finally:
            conn.close()

    def answer(self, annotator: int, assignment_id: int, choice: str, reason: str = "") -> int:
        """Record an answer and commit it before returning its id: once the caller acknowledges, it is on disk.

        Re-sending the same answer (a browser retry) returns the same id instead of recording it twice.
        """
        if choice not in CHOICES:
            raise QueueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}", 422)
        conn = self.connect()
        try:
            with transaction(conn):
                lease = conn.execute(
                    "SELECT * FROM assignments WHERE id = ? AND annotator_id = ?", (assignment_id, annotator)
                ).fetchone()
                if lease is None:
                    raise QueueError(f"assignment {assignment_id} is not yours", 404)
                live = conn.execute(
                    "SELECT id, choice FROM answers WHERE assignment_id = ? AND undone IS NULL", (assignment_id,)
                ).fetchone()
                if live is not None:
                    if live["choice"] == choice:
                        return int(live["id"])
                    raise QueueError(f"assignment {assignment_id} is already answered ({live['choice']}); undo first")
                if lease["state"] != "open":
                    raise QueueError(f"assignment {assignment_id} has lapsed; load the next pair")
                a_first = bool(lease["a_is_first"])
                winner = {"A": "first" if a_first else "second", "B": "second" if a_first else "first"}.get(choice)
                winner = "tie" if choice == "tie" else winner
                cur = conn.execute(
                    """INSERT INTO answers (assignment_id, item_id, annotator_id, choice, a_is_first, winner,
                       reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    (assignment_id, lease["item_id"], annotator, choice, int(a_first), winner, reason, time.time()),
                )
                state = "skipped" if choice == "skip" else "answered"
                conn.execute("UPDATE assignments SET state = ? WHERE id = ?", (state, assignment_id))
                return int(cur.lastrowid or 0)
        finally:
            conn.close()

    def undo(self, annotator: int) -> int:
        """Withdraw the annotator's last answer and re-open its pair for them (same sides); returns its item id."""
        conn = self.connect()
        try:
            with transaction(conn):
                last = conn.execute(
                    "SELECT id, assignment_id, item_id FROM answers WHERE annotator_id = ? AND undone IS NULL "
                    "ORDER BY id DESC LIMIT 1",
                    (annotator,),
                ).fetchone()
                if last is None:
                    raise QueueError("nothing to undo")
                now = time.time()
                conn.execute("UPDATE answers SET undone = ? WHERE id = ?", (now, last["id"]))
                # The pair they were looking at goes back to the pool; the undone one is theirs again.
                conn.execute(
                    "UPDATE assignments SET state = 'expired' WHERE annotator_id = ? AND state = 'open'", (annotator,)
                )
                conn.execute(
                    "UPDATE assignments SET state = 'open', issued = ? WHERE id = ?", (now, last["assignment_id"])
                )
                return int(last["item_id"])
        finally:
            conn.close()
